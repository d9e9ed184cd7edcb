"""The fine-tuning loop: schedule, determinism, resume, checkpoints that load, the CLI."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from ncprobe.errors import NcprobeError
from ncprobe.finetune.train import default_lr, finetune, lr_factor, resume_path
from ncprobe.models.ncprobe_format import read_meta

DIGITS = "digits:train@classes=0-5"
FAST = dict(arch="small_cnn", data=DIGITS, batch_size=64, limit_batches=3, progress=False, flip=False)


def _has(module: str, attr: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


needs_data = pytest.mark.skipif(not _has("ncprobe.data", "load_dataset"), reason="ncprobe.data.load_dataset is not written yet")
needs_ckpt = pytest.mark.skipif(not _has("ncprobe.checkpoint", "load_checkpoint"),
                                reason="ncprobe.checkpoint.load_checkpoint is not written yet")


def test_lr_schedule_closed_form():
    total, warm = 20, 4
    f = [lr_factor(s, total, warm) for s in range(total)]
    np.testing.assert_allclose(f[:warm], [0.25, 0.5, 0.75, 1.0])
    ref = [0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))) for s in range(warm, total)]
    np.testing.assert_allclose(f[warm:], ref)
    assert lr_factor(0, 10, 0) == 1.0


def test_default_lr():
    assert default_lr("sgd", False) == 0.1 and default_lr("adamw", False) == 0.01
    assert default_lr("sgd", True) == pytest.approx(0.01) and default_lr("adamw", True) == pytest.approx(0.001)


def test_argument_errors(tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(NcprobeError, match="exactly one"):
        finetune(None, data=DIGITS, mode="ce", out=out)
    with pytest.raises(NcprobeError, match="etf\\+entropy"):
        finetune(arch="small_cnn", data=DIGITS, mode="nc", out=out)
    with pytest.raises(NcprobeError, match=".safetensors"):
        finetune(arch="small_cnn", data=DIGITS, mode="ce", out=tmp_path / "m.pt")
    with pytest.raises(NcprobeError, match="optimizer"):
        finetune(arch="small_cnn", data=DIGITS, mode="ce", optimizer="lbfgs", out=out)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@needs_data
def test_deterministic_and_resume_equals_uninterrupted(tmp_path):
    kw = dict(FAST, mode="etf+entropy", epochs=2, projector_dim=64, seed=3)
    kw["flip"] = True
    full, hist_full = finetune(out=tmp_path / "full.safetensors", **kw)
    again, _ = finetune(out=tmp_path / "again.safetensors", **kw)
    sf, sa = _state(full), _state(again)
    assert all(torch.equal(sf[k], sa[k]) for k in sf), "same seed on CPU must give the same weights"

    part = tmp_path / "part.safetensors"
    _, hist1 = finetune(out=part, stop_after=1, **kw)
    assert len(hist1) == 1 and resume_path(part).exists()
    assert read_meta(part)["history"][0]["epoch"] == 1
    state = torch.load(resume_path(part), weights_only=True)  # plain tensors and containers only
    assert state["epoch"] == 1
    resumed, hist2 = finetune(out=part, resume=True, **kw)
    assert [h["epoch"] for h in hist2] == [1, 2]
    sr = _state(resumed)
    assert all(torch.equal(sf[k], sr[k]) for k in sf), "resumed run differs from the uninterrupted one"
    assert hist2[1]["loss"] == pytest.approx(hist_full[1]["loss"], rel=1e-6)
    # the frozen projector never moved
    proj = resumed.projector[0].weight.detach().numpy()
    np.testing.assert_allclose(proj, np.sqrt(128 / 127) * (np.eye(64, 128) - 1 / 128), rtol=1e-6, atol=1e-7)
    with pytest.raises(NcprobeError, match="epochs"):
        finetune(out=part, resume=True, **{**kw, "epochs": 3})


@needs_data
def test_training_learns_digits(tmp_path):
    model, hist = finetune(out=tmp_path / "m.safetensors", arch="small_cnn", data=DIGITS, mode="etf+entropy",
                           epochs=5, optimizer="adamw", batch_size=64, projector_dim=256, progress=False,
                           flip=False, val="digits:test@classes=0-5")
    assert hist[-1]["val_acc"] > 0.85, hist
    assert hist[-1]["lr"] < hist[0]["lr"]
    assert set(hist[0]) == {"epoch", "loss", "train_acc", "val_acc", "lr", "seconds"}


@needs_data
@needs_ckpt
@pytest.mark.parametrize("mode", ["l2", "etf+entropy"])
def test_finetuned_checkpoint_loads_with_no_flags(tmp_path, mode):
    from ncprobe.checkpoint import load_checkpoint

    out = tmp_path / "m.safetensors"
    model, _ = finetune(out=out, mode=mode, epochs=1, projector_dim=64, **FAST)
    ck = load_checkpoint(str(out))
    assert ck.head_name == "classifier" and ck.num_classes == 6 and tuple(ck.input_size) == (3, 16, 16)
    assert "encoder" in ck.probe_layers and ("projector" in ck.probe_layers) == ("etf" in mode)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(ck.model(x).numpy(), model.cpu().eval()(x).numpy(), rtol=1e-5, atol=1e-6)
    # fine-tune the fine-tuned checkpoint again, in another mode
    again, hist = finetune(str(out), data=DIGITS, mode="ce", epochs=1, out=tmp_path / "again.safetensors",
                           batch_size=64, limit_batches=2, progress=False)
    assert again.mode == "ce" and len(hist) == 1
    assert read_meta(tmp_path / "again.safetensors")["arch"] == "small_cnn"


@needs_data
@pytest.mark.parametrize("mode", ["ce", "l2", "etf", "entropy", "etf+entropy"])
def test_cli_end_to_end(tmp_path, mode):
    from click.testing import CliRunner

    from ncprobe.cli import cli

    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(cli, ["finetune", "--arch", "small_cnn", "--data", DIGITS, "--mode", mode,
                                   "--epochs", "1", "--batch-size", "64", "--projector-dim", "64", "--no-flip",
                                   "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"checkpoint: {out}" in res.output and "train accuracy" in res.output
    meta = read_meta(out)
    assert meta["mode"] == mode and meta["num_classes"] == 6 and len(meta["history"]) == 1
    assert meta["config"]["label_smoothing"] == (0.1 if "etf" in mode else 0.0)


def test_cli_needs_one_of_ckpt_or_arch(tmp_path, capsys):
    from ncprobe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--data", DIGITS, "--mode", "ce", "--out", str(tmp_path / "m.safetensors")])
    assert exc.value.code == 2
    assert "exactly one" in capsys.readouterr().err


@needs_data
@needs_ckpt
@pytest.mark.shared
def test_real_checkpoint_wrap_and_finetune(shared_data, tmp_path):
    """The public CIFAR-10 ResNet-20: wrapping in ce mode keeps its logits exactly; a one-batch
    etf fine-tune writes a checkpoint that loads back with the projector as a probe point."""
    from ncprobe.checkpoint import load_checkpoint
    from ncprobe.models.nc_heads import wrap_model

    src = str(shared_data / "checkpoints" / "resnet20-12fca82f.th")
    ck = load_checkpoint(src)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = ck.model(x)
        wrapped = wrap_model(ck.model, ck.head_name, "ce", ck.num_classes).eval()
        assert torch.equal(wrapped(x), before)
    out = tmp_path / "r20.safetensors"
    model, hist = finetune(src, data=f"{shared_data / 'cifar10_train.npz'}@n=64", mode="etf", epochs=1,
                           batch_size=32, limit_batches=1, projector_dim=128, progress=False, out=out)
    back = load_checkpoint(str(out))
    assert back.arch == "cifar_resnet20" and back.probe_layers[-2:] == ["encoder", "projector"]
    assert "encoder.layer3" in back.probe_layers
    with torch.no_grad():
        np.testing.assert_allclose(back.model(x).numpy(), model.cpu()(x).numpy(), rtol=1e-5, atol=1e-6)
