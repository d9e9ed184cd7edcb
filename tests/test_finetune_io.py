"""ncprobe checkpoints: save, read the metadata, rebuild from it, load through load_checkpoint."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ncprobe
from ncprobe.errors import CheckpointError
from ncprobe.models.ncprobe_format import build_model_from_meta, read_meta, save_checkpoint


def _meta(mode, **kw):
    return {"arch": "small_cnn", "mode": mode, "num_classes": 6, "input_size": [3, 16, 16],
            "mean": [0.5] * 3, "std": [0.5] * 3, "head": {"projector_dim": 64} if "etf" in mode else {},
            "config": {"lr": 0.1}, "history": [{"epoch": 1, "loss": 1.5}], **kw}


@pytest.mark.parametrize("mode", ["ce", "l2", "etf", "entropy", "etf+entropy"])
def test_save_read_rebuild_same_logits(tmp_path, mode):
    torch.manual_seed(0)
    model, head, probes = build_model_from_meta(_meta(mode))
    assert head == "classifier"
    assert probes[:4] == ["encoder.block1", "encoder.block2", "encoder.block3", "encoder"]
    assert ("projector" in probes) == ("etf" in mode)
    for name in probes + [head]:
        model.get_submodule(name)
    path = save_checkpoint(tmp_path / "m.safetensors", model, _meta(mode))
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    assert md["format"] == "ncprobe"
    meta = json.loads(md["ncprobe"])
    assert meta == read_meta(path)
    assert meta["ncprobe_version"] == ncprobe.__version__ and meta["history"][0]["loss"] == 1.5
    torch.manual_seed(1)  # a different init, overwritten by the file
    again, _, _ = build_model_from_meta(meta)
    from safetensors.torch import load_file

    again.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(model.eval()(x), again.eval()(x))


def test_read_meta_refuses_plain_safetensors(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(CheckpointError, match="without ncprobe metadata"):
        read_meta(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_meta(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        read_meta(tmp_path / "junk.safetensors")


def test_build_refuses_bad_meta():
    with pytest.raises(CheckpointError, match="lacks"):
        build_model_from_meta({"arch": "small_cnn"})
    with pytest.raises(CheckpointError, match="mode"):
        build_model_from_meta({"arch": "small_cnn", "mode": "x", "num_classes": 3})
    with pytest.raises(CheckpointError):
        build_model_from_meta({"arch": "no_such_arch", "mode": "ce", "num_classes": 3})


def test_timm_arch_rebuilds():
    model, head, probes = build_model_from_meta({"arch": "timm:resnet18", "mode": "etf", "num_classes": 3,
                                                 "head": {"projector_dim": 32}})
    assert probes[-2:] == ["encoder", "projector"] and "encoder.layer4" in probes
    assert model.classifier.in_features == 512 and model.projector[0].weight.shape == (32, 512)


def _has_load_checkpoint() -> bool:
    return hasattr(importlib.import_module("ncprobe.checkpoint"), "load_checkpoint")


@pytest.mark.skipif(not _has_load_checkpoint(), reason="ncprobe.checkpoint.load_checkpoint is not written yet")
@pytest.mark.parametrize("mode", ["ce", "etf+entropy"])
def test_load_checkpoint_reads_it_with_no_flags(tmp_path, mode):
    from ncprobe.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model, _, probes = build_model_from_meta(_meta(mode))
    path = save_checkpoint(tmp_path / "m.safetensors", model, _meta(mode))
    ck = load_checkpoint(str(path))
    assert ck.head_name == "classifier" and ck.num_classes == 6
    assert tuple(ck.input_size) == (3, 16, 16) and tuple(ck.mean) == (0.5, 0.5, 0.5)
    assert list(ck.probe_layers) == probes
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(ck.model(x), model.eval()(x))


@pytest.mark.parametrize("head", [{"l2_scale": 4.0, "learn_scale": False}, {"l2_scale": 2.0, "learn_scale": True}])
def test_l2_scale_round_trip(tmp_path, head):
    meta = {**_meta("l2"), "head": head}
    model, _, _ = build_model_from_meta(meta)
    with torch.no_grad():
        model.norm.scale.fill_(7.5)  # as if it had been learned / edited
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    from safetensors.torch import load_file

    again, _, _ = build_model_from_meta(read_meta(path))
    again.load_state_dict(load_file(str(path)), strict=True)
    assert again.norm.scale.item() == 7.5
    assert isinstance(again.norm.scale, torch.nn.Parameter) == head["learn_scale"]
