"""Every supported checkpoint format round-trips: the loaded model gives the original's logits."""

from __future__ import annotations

import argparse
import importlib.util
import json
import textwrap
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.serialization as ser
from torch import nn

from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.describe import layer_shapes
from ncprobe.checkpoint.state_dict import WRAPPER_KEYS, strip_prefix_variants
from ncprobe.errors import CheckpointError
from ncprobe.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_registry")


def _model(name="cifar_resnet20", num_classes=7, seed=0):
    torch.manual_seed(seed)
    model = create_model(name, num_classes)
    # non-trivial BatchNorm statistics, so a forgotten buffer changes the logits
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _same_logits(a: nn.Module, b: nn.Module, size=(3, 32, 32)) -> bool:
    x = torch.randn(4, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_plain_state_dict_zip_and_legacy(tmp_path):
    model = _model()
    for legacy in (False, True):
        path = tmp_path / f"plain{legacy}.pt"
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
        ckpt = load_checkpoint(path)
        assert ckpt.arch == "cifar_resnet20" and ckpt.num_classes == 7
        assert ckpt.metadata["format"] == ("torch-legacy" if legacy else "torch")
        assert not ckpt.model.training
        assert _same_logits(model, ckpt.model)


@pytest.mark.parametrize("key", WRAPPER_KEYS)
def test_wrapped_under_each_key(tmp_path, key):
    model = _model()
    path = tmp_path / "wrapped.pt"
    torch.save({key: model.state_dict(), "epoch": 3, "best_acc": 0.5}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["wrapper"] == [key]
    assert ckpt.metadata["file_extras"] == {"epoch": 3, "best_acc": 0.5}
    assert _same_logits(model, ckpt.model)


def test_wrapped_nested_and_under_unknown_key(tmp_path):
    model = _model()
    for obj, wrapper in (
        ({"model": {"state_dict": model.state_dict()}}, ["model", "state_dict"]),
        ({"checkpoint": {"weights_of_run_3": model.state_dict()}, "optimizer": {}}, ["checkpoint", "weights_of_run_3"]),
    ):
        path = tmp_path / "nested.pt"
        torch.save(obj, path)
        ckpt = load_checkpoint(path)
        assert ckpt.metadata["wrapper"] == wrapper
        assert _same_logits(model, ckpt.model)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model.", "module._orig_mod.", "model.module."])
def test_prefixed_keys(tmp_path, prefix):
    model = _model()
    path = tmp_path / "prefixed.pt"
    torch.save({"state_dict": {prefix + k: v for k, v in model.state_dict().items()}}, path)
    ckpt = load_checkpoint(path)
    assert "".join(ckpt.metadata["stripped_prefixes"]) == prefix
    assert _same_logits(model, ckpt.model)


def test_prefix_stripped_only_when_all_or_most_keys_carry_it():
    t = torch.zeros(1)
    most = {f"module.k{i}": t for i in range(19)} | {"other": t}
    variants = strip_prefix_variants(most)
    assert variants[0][0] == ("module.",) and "k0" in variants[0][1] and "other" in variants[0][1]
    assert variants[-1][1] is most  # the original is always tried last
    half = {"module.a": t, "b": t}
    assert [v[0] for v in strip_prefix_variants(half)] == [()]


def test_safetensors_with_metadata(tmp_path):
    from safetensors.torch import save_file

    model = _model()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"format": "pt", "run": "a"})
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["format"] == "safetensors"
    assert ckpt.metadata["file_metadata"] == {"format": "pt", "run": "a"}
    assert ckpt.origin["arch"] == "inferred"
    assert _same_logits(model, ckpt.model)
    # arch stored in the metadata is a file fact; the extension is not needed to recognize the format
    other = tmp_path / "weights.bin"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(other), metadata={"arch": "cifar_resnet20"})
    ckpt = load_checkpoint(other)
    assert ckpt.metadata["format"] == "safetensors" and ckpt.origin["arch"] == "file"


def test_cuda_saved_file_loads_on_cpu(tmp_path, monkeypatch):
    """The file genuinely records cuda:0 storages (torch's location tag is patched while saving)."""
    model = _model()
    for legacy in (False, True):
        path = tmp_path / f"cuda{legacy}.pt"
        with monkeypatch.context() as m:
            m.setattr(ser, "location_tag", lambda storage: "cuda:0")
            torch.save({"state_dict": model.state_dict()}, path, _use_new_zipfile_serialization=not legacy)
        if legacy:
            assert b"cuda:0" in path.read_bytes()
        else:
            with zipfile.ZipFile(path) as zf:
                assert b"cuda:0" in zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
        if not torch.cuda.is_available():
            with pytest.raises(RuntimeError, match="CUDA"):
                torch.load(path, weights_only=True)
        ckpt = load_checkpoint(path)
        assert next(ckpt.model.parameters()).device.type == "cpu"
        assert _same_logits(model, ckpt.model)


def test_torchscript_of_registered_arch_becomes_eager(tmp_path):
    model = _model()
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), str(path))
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["format"] == "torchscript"
    assert ckpt.arch == "cifar_resnet20" and ckpt.origin["arch"] == "inferred"
    assert not isinstance(ckpt.model, torch.jit.ScriptModule)
    assert _same_logits(model, ckpt.model)


def test_torchscript_unknown_sequential_keeps_its_forward_and_takes_hooks(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)
    ).eval()
    path = tmp_path / "seq.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(net), str(path))
    with pytest.raises(CheckpointError, match="--trust-code"):  # running it runs the file's code
        load_checkpoint(path)
    ckpt = load_checkpoint(path, trust_code=True)
    assert ckpt.arch == "torchscript:Sequential" and ckpt.head_name == "4" and ckpt.num_classes == 5
    assert isinstance(ckpt.head, nn.Linear) and ckpt.metadata["hookable"] is True
    assert _same_logits(net, ckpt.model)
    shapes = layer_shapes(ckpt)
    assert shapes["penultimate"] == (8,) and shapes["logits"] == (5,)


class PickledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_full_pickled_module_needs_trust(tmp_path):
    torch.manual_seed(0)
    net = PickledNet().eval()
    path = tmp_path / "full.pt"
    torch.save(net, path)
    with pytest.raises(CheckpointError, match="--trust-pickle") as info:
        load_checkpoint(path)
    assert "PickledNet" in str(info.value) and "\n" not in str(info.value)
    ckpt = load_checkpoint(path, trust_pickle=True)
    assert ckpt.arch.endswith("PickledNet") and ckpt.origin["arch"] == "file"
    assert ckpt.head_name == "fc" and ckpt.num_classes == 3 and ckpt.probe_layers == ["features"]
    assert ckpt.metadata["unpickled_code"] is True
    assert _same_logits(net, ckpt.model)


def test_plain_data_next_to_weights_needs_no_trust(tmp_path):
    """numpy scalars/arrays and argparse.Namespace rebuild data only: allowed without --trust-pickle."""
    model = _model()
    path = tmp_path / "with_numpy.pt"
    torch.save(
        {"state_dict": model.state_dict(), "best_acc": np.float64(0.9), "curve": np.arange(3), "args": argparse.Namespace(lr=0.1)},
        path,
    )
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["unpickled_code"] is False
    assert ckpt.metadata["file_extras"]["best_acc"] == pytest.approx(0.9)
    assert _same_logits(model, ckpt.model)


def test_timm_arch_with_a_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    path = tmp_path / "timm.pth"
    torch.save(net.state_dict(), path)
    ckpt = load_checkpoint(path, arch="timm:test_resnet")
    assert ckpt.num_classes == 5 and ckpt.origin["num_classes"] == "inferred"
    assert ckpt.head_name == "fc"
    assert ckpt.probe_layers == [d["module"] for d in net.feature_info]
    assert ckpt.input_size == tuple(net.pretrained_cfg["input_size"])
    assert _same_logits(net, ckpt.model, size=(3, 64, 64))


USER_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, num_classes))

        def forward(self, x):
            return self.head(self.body(self.stem(x)).mean((2, 3), keepdim=True))
    """
)


def test_user_class_from_file_and_module(tmp_path, monkeypatch):
    src = tmp_path / "mymodels_ckpt_test.py"
    src.write_text(USER_MODEL)
    spec = importlib.util.spec_from_file_location("mymodels_ckpt_ref", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.Net(num_classes=4).eval()
    path = tmp_path / "user.pt"
    torch.save(net.state_dict(), path)

    ckpt = load_checkpoint(path, arch=f"{src}:Net")
    assert ckpt.num_classes == 4 and ckpt.head_name == "head.1"
    assert ckpt.probe_layers == ["body"] and ckpt.input_size == (3, 32, 32)
    assert _same_logits(net, ckpt.model)

    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = load_checkpoint(path, arch="mymodels_ckpt_test:Net")
    assert ckpt.arch == "mymodels_ckpt_test:Net" and _same_logits(net, ckpt.model)


@pytest.mark.skipif(importlib.util.find_spec("ncprobe.models.ncprobe_format") is None, reason="ncprobe.models.ncprobe_format not present")
def test_ncprobe_checkpoint_rebuilds_from_its_metadata(tmp_path):
    from ncprobe.models.ncprobe_format import build_model_from_meta, save_checkpoint

    meta = {"arch": "cifar_resnet20", "mode": "ce", "num_classes": 4, "input_size": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    torch.manual_seed(0)
    model, head, _ = build_model_from_meta(meta)
    path = save_checkpoint(tmp_path / "nc.safetensors", model.eval(), meta)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "cifar_resnet20" and ckpt.origin["arch"] == "file"
    assert ckpt.num_classes == 4 and ckpt.origin["num_classes"] == "file"
    assert ckpt.mean == (0.5, 0.5, 0.5) and ckpt.std == (0.25, 0.25, 0.25) and ckpt.origin["mean"] == "file"
    assert ckpt.head_name == head and json.loads(json.dumps(ckpt.metadata["ncprobe"]))["mode"] == "ce"
    assert _same_logits(model, ckpt.model)
    # flags beat the file
    ckpt = load_checkpoint(path, mean=(0.1, 0.2, 0.3), input_size=64)
    assert ckpt.mean == (0.1, 0.2, 0.3) and ckpt.origin["mean"] == "flag"
    assert ckpt.input_size == (3, 64, 64) and ckpt.origin["input_size"] == "flag"


def test_ncprobe_checkpoint_naming_user_code_is_refused_without_consent(tmp_path):
    from safetensors.torch import save_file

    meta = {"arch": "evil_module:Thing", "mode": "ce", "num_classes": 2}
    path = tmp_path / "nc.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "ncprobe", "ncprobe": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="user code evil_module:Thing"):
        load_checkpoint(path)


def test_flags_override_and_are_validated(tmp_path):
    model = _model()
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path, mean="0.5,0.5,0.5", std=[0.2, 0.2, 0.2], input_size="3x40x40", num_classes=7)
    assert ckpt.mean == (0.5, 0.5, 0.5) and ckpt.std == (0.2, 0.2, 0.2) and ckpt.input_size == (3, 40, 40)
    assert {ckpt.origin[k] for k in ("mean", "std", "input_size", "num_classes")} == {"flag"}
    assert ckpt.origin["arch"] == "inferred"
    with pytest.raises(CheckpointError, match="mean has 2 values but the input has 3 channels"):
        load_checkpoint(path, mean="0.5,0.5")
    with pytest.raises(CheckpointError, match="input size"):
        load_checkpoint(path, input_size="big")
