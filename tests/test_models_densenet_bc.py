"""DenseNet(-BC) for CIFAR: blockN.layer.M / transN / bn1 / fc, and the dense{N} / bn layout."""

from __future__ import annotations

import re

import pytest
import torch
from family_helpers import (
    batch,
    build,
    check_all_layouts,
    check_probe_layers,
    check_torchscript,
    inferred_on_meta,
    logits,
)

from ncprobe.checkpoint import load_checkpoint
from ncprobe.models import get_arch, list_archs
from ncprobe.models.introspect import build_on_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_registry")


def _params(name: str, classes: int = 10) -> int:
    return sum(p.numel() for p in build_on_meta(get_arch(name).builder, num_classes=classes).parameters())


def _to_dense_layout(sd: dict) -> dict:
    """The other public CIFAR DenseNet's names: dense{N}.{M}. layers and a top-level 'bn'."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^block(\d)\.layer\.", r"dense\1.", k)
        k = re.sub(r"^bn1\.", "bn.", k)
        out[k] = v
    return out


@pytest.mark.parametrize("classes", [10, 100])
def test_densenet_bc_40_every_layout(tmp_path, classes):
    for ckpt in check_all_layouts(tmp_path, "densenet40_bc_k12", classes):
        assert ckpt.metadata["inference"]["ambiguous"] == [] and ckpt.metadata["aliased_keys"] is False


def test_plain_densenet_40_logits(tmp_path):
    check_all_layouts(tmp_path, "densenet40_k12", 10, layouts=("plain",), n=1)


@pytest.mark.parametrize("arch", ["densenet40_bc_k12", "densenet100_bc_k12", "densenet250_bc_k24", "densenet190_bc_k40",
                                  "densenet40_k12", "densenet100_k12", "densenet100_k24", "densenet100_k24_s16",
                                  "densenet40_k12_s16", "densenet52_b_k16", "densenet22_c_k8"])
def test_depth_growth_bottleneck_compression_stem_from_shapes(arch):
    for classes in (10, 100):
        inf = inferred_on_meta(arch, classes)
        assert inf.match is not None and inf.match.arch == arch and inf.match.num_classes == classes
        assert inf.ambiguous == []


def test_paper_sizes():
    """Huang et al. 2017, Table 2 (C10 column), in millions of parameters."""
    for name, millions in (("densenet40_k12_s16", 1.0), ("densenet100_k12_s16", 7.0), ("densenet100_k24_s16", 27.2),
                           ("densenet100_bc_k12", 0.8), ("densenet250_bc_k24", 15.3), ("densenet190_bc_k40", 25.6)):
        assert round(_params(name) / 1e6, 1) == millions, name


def test_key_layout():
    k = {n: tuple(v.shape) for n, v in build_on_meta(get_arch("densenet100_bc_k12").builder, num_classes=10).state_dict().items()}
    assert k["conv1.weight"] == (24, 3, 3, 3)
    assert k["block1.layer.0.bn1.weight"] == (24,) and k["block1.layer.0.conv1.weight"] == (48, 24, 1, 1)
    assert k["block1.layer.0.conv2.weight"] == (12, 48, 3, 3) and k["block1.layer.15.conv2.weight"] == (12, 48, 3, 3)
    assert "block1.layer.16.conv1.weight" not in k
    assert k["trans1.bn1.weight"] == (216,) and k["trans1.conv1.weight"] == (108, 216, 1, 1)
    assert k["trans2.conv1.weight"] == (150, 300, 1, 1) and k["bn1.weight"] == (342,) and k["fc.weight"] == (10, 342)
    assert "trans3.conv1.weight" not in k
    assert "densenet100_bc_k12" in list_archs() and "densenet40_bc_k12" in list_archs()


def test_new_features_are_appended_after_the_input():
    model = build("densenet40_bc_k12", 10)
    x = torch.randn(1, 24, 8, 8)
    with torch.no_grad():
        out = model.block1.layer[0](x)
    assert out.shape[1] == 36 and torch.equal(out[:, :24], x)


def test_the_dense_n_layout_loads_through_aliases(tmp_path):
    """dense1.0.bn1 / trans1.conv1 / bn / fc: renamed to blockN.layer / bn1, same logits."""
    model = build("densenet40_bc_k12", 10)
    sd = _to_dense_layout(model.state_dict())
    assert "dense1.0.conv2.weight" in sd and "bn.weight" in sd and "bn1.weight" not in sd
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "dense.pt")
    ckpt = load_checkpoint(tmp_path / "dense.pt")
    assert ckpt.arch == "densenet40_bc_k12" and ckpt.num_classes == 10 and ckpt.metadata["aliased_keys"] is True
    assert (logits(model, batch()) - logits(ckpt.model, batch())).abs().max() <= 1e-5
    plain = build("densenet40_k12", 100)  # the same layout for basic layers and no compression
    torch.save(_to_dense_layout(plain.state_dict()), tmp_path / "plain.pt")
    ckpt = load_checkpoint(tmp_path / "plain.pt")
    assert ckpt.arch == "densenet40_k12" and ckpt.num_classes == 100


def test_not_confused_with_the_kuangliu_densenet():
    """kuangliu's densenet_cifar (dense1..4, trans1..3, bn, linear) and this family stay apart."""
    assert inferred_on_meta("densenet_cifar", 10).match.arch == "densenet_cifar"
    assert inferred_on_meta("densenet40_bc_k12", 10).match.arch == "densenet40_bc_k12"


def test_probe_layers():
    seen = check_probe_layers("densenet100_bc_k12")
    assert [s[1:] for s in seen.values()] == [(216, 32, 32), (108, 16, 16), (300, 16, 16), (150, 8, 8), (342, 8, 8)]


def test_torchscript_archives(tmp_path):
    for mode in ("script", "trace"):
        ckpt, diff = check_torchscript(tmp_path, "densenet40_bc_k12", 10, mode)
        assert ckpt.metadata["format"] == "torchscript" and ckpt.arch == "densenet40_bc_k12"
        assert ckpt.origin["arch"] == "inferred" and not isinstance(ckpt.model, torch.jit.ScriptModule)
        assert diff <= 1e-5
