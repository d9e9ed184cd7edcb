"""The real public CIFAR-10 ResNets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ncprobe.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESNET20_SHA = "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"


def _batch(shared_data, n=500):
    d = np.load(shared_data / "cifar10_test.npz")
    x = torch.from_numpy(d["x"][:n]).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(d["y"][:n])


def _logits(ckpt, x):
    mean = torch.tensor(ckpt.mean).view(1, 3, 1, 1)
    std = torch.tensor(ckpt.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return ckpt.model((x - mean) / std)


@pytest.mark.shared
def test_resnet20_registry_match_and_inferred_copy(shared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("NCPROBE_REGISTRY", raising=False)
    src = shared_data / "checkpoints" / "resnet20-12fca82f.th"
    ckpt = load_checkpoint(src)
    assert ckpt.sha256 == RESNET20_SHA
    assert ckpt.arch == "cifar_resnet20" and ckpt.name == "resnet20-cifar10"
    assert {ckpt.origin[k] for k in ("arch", "num_classes", "mean", "std", "input_size")} == {"registry"}
    assert ckpt.mean == (0.485, 0.456, 0.406) and ckpt.std == (0.229, 0.224, 0.225)
    assert ckpt.metadata["published_top1"] == 91.73 and ckpt.metadata["stripped_prefixes"] == ["module."]
    assert ckpt.num_parameters() == 269_722

    x, y = _batch(shared_data)
    ref = _logits(ckpt, x)
    # 500 test images; 91.72 % over all 9,966 (PROVENANCE.md)
    assert (ref.argmax(1) == y).float().mean().item() > 0.88

    copy = tmp_path / "model.pt"
    shutil.copy(src, copy)
    renamed = load_checkpoint(copy)  # same bytes, same sha256: still the registry entry
    assert renamed.name == "resnet20-cifar10" and renamed.origin["arch"] == "registry"

    empty = tmp_path / "empty.yaml"
    empty.write_text("checkpoints: []\n")
    monkeypatch.setenv("NCPROBE_REGISTRY", str(empty))
    inferred = load_checkpoint(copy)
    assert inferred.arch == "cifar_resnet20" and inferred.origin["arch"] == "inferred"
    assert inferred.num_classes == 10 and inferred.origin["num_classes"] == "inferred"
    assert inferred.name == "model"
    assert torch.allclose(_logits(inferred, x), ref, atol=1e-6)


@pytest.mark.shared
def test_resnet32_registry_match(shared_data, monkeypatch):
    monkeypatch.delenv("NCPROBE_REGISTRY", raising=False)
    ckpt = load_checkpoint(shared_data / "checkpoints" / "resnet32-d509ac18.th")
    assert ckpt.arch == "cifar_resnet32" and ckpt.origin["arch"] == "registry"
    assert ckpt.sha256.startswith("d509ac18") and ckpt.metadata["published_top1"] == 92.63
    x, y = _batch(shared_data)
    assert (_logits(ckpt, x).argmax(1) == y).float().mean().item() > 0.88
