"""Wide ResNets in the Outlier-Exposure / energy-OOD layout (blockK.layer.N, convShortcut, fc)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_helpers import (
    batch,
    build,
    check_all_layouts,
    check_load,
    check_probe_layers,
    check_torchscript,
    inferred_on_meta,
    logits,
    save,
)

from ncprobe.checkpoint import load_checkpoint
from ncprobe.models import create_model, get_arch, list_archs
from ncprobe.models.families.wrn_oe import OEBlock
from ncprobe.models.introspect import build_on_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_registry")


@pytest.mark.parametrize("arch, classes", [("wrn16_2_oe", 10), ("wrn16_2_oe", 100)])
def test_every_layout_loads_with_no_flags(tmp_path, arch, classes):
    for ckpt in check_all_layouts(tmp_path, arch, classes):
        assert ckpt.metadata["inference"]["ambiguous"] == []


def test_the_standard_ood_checkpoint_wrn40_2(tmp_path):
    check_all_layouts(tmp_path, "wrn40_2_oe", 10, layouts=("plain", "module"))


@pytest.mark.parametrize("arch", ["wrn16_2_oe", "wrn16_8_oe", "wrn28_10_oe", "wrn34_10_oe", "wrn40_1_oe", "wrn40_2_oe",
                                  "wrn40_4_oe", "wrn52_3_oe", "wrn10_5_oe"])
def test_depth_and_widen_factor_from_shapes(arch):
    """n from the blocks in block1.layer, k from the first block's width (meta build, no memory)."""
    for classes in (10, 100):
        inf = inferred_on_meta(arch, classes)
        assert inf.match is not None and inf.match.arch == arch and inf.match.num_classes == classes
    assert ("wrn52_3_oe" in list_archs()) is False and get_arch("wrn52_3_oe").name == "wrn52_3_oe"


def test_published_sizes():
    """WRN-40-2 2.2 M and WRN-28-10 36.5 M parameters (Zagoruyko & Komodakis 2016, Table 1/4)."""
    for name, millions in (("wrn40_2_oe", 2.2), ("wrn28_10_oe", 36.5)):
        model = build_on_meta(get_arch(name).builder, num_classes=10)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


def test_key_layout():
    keys = {k: tuple(v.shape) for k, v in build_on_meta(get_arch("wrn40_2_oe").builder, num_classes=10).state_dict().items()}
    assert keys["conv1.weight"] == (16, 3, 3, 3)
    assert keys["block1.layer.0.bn1.weight"] == (16,) and keys["block1.layer.0.conv1.weight"] == (32, 16, 3, 3)
    assert keys["block1.layer.0.convShortcut.weight"] == (32, 16, 1, 1)
    assert keys["block2.layer.0.convShortcut.weight"] == (64, 32, 1, 1)
    assert "block1.layer.1.convShortcut.weight" not in keys and "block1.layer.5.conv2.weight" in keys
    assert "block1.layer.6.conv1.weight" not in keys
    assert keys["bn1.weight"] == (128,) and keys["fc.weight"] == (10, 128)
    # widen factor 1: the first group keeps 16 channels and has no shortcut conv
    keys = set(create_model("wrn40_1_oe", 10).state_dict())
    assert "block1.layer.0.convShortcut.weight" not in keys and "block2.layer.0.convShortcut.weight" in keys


def test_shortcut_takes_the_preactivated_input():
    """convShortcut(relu(bn1(x))) + conv2(...): written out by hand for one block."""
    torch.manual_seed(0)
    block = OEBlock(16, 32, 2).eval()
    with torch.no_grad():
        block.bn1.running_mean.normal_(0, 0.5)
        block.bn1.running_var.uniform_(0.5, 2)
        block.bn1.bias.normal_(0, 0.5)
        x = torch.randn(2, 16, 8, 8)
        pre = F.relu(block.bn1(x))
        out = block.conv2(F.relu(block.bn2(block.conv1(pre))))
        assert torch.allclose(block(x), block.convShortcut(pre) + out, atol=1e-6)
        assert not torch.allclose(block(x), block.convShortcut(x) + out, atol=1e-3)


def test_distinguished_from_the_ddu_layout(tmp_path):
    """wrn16_2 (layer1..3, shortcut, linear) and wrn16_2_oe load as themselves."""
    x = batch()
    for arch in ("wrn16_2", "wrn16_2_oe"):
        model = build(arch, 10)
        d = tmp_path / arch
        d.mkdir()
        ckpt = check_load(save(model, d, "plain"), arch, 10, model, x)
        assert ckpt.metadata["inference"]["ambiguous"] == []


def test_probe_layers():
    seen = check_probe_layers("wrn40_2_oe")
    assert [s[1:] for s in seen.values()] == [(32, 32, 32), (64, 16, 16), (128, 8, 8)]


def test_torchscript_archives(tmp_path):
    for mode in ("script", "trace"):
        ckpt, diff = check_torchscript(tmp_path, "wrn16_2_oe", 10, mode)
        assert ckpt.metadata["format"] == "torchscript" and ckpt.arch == "wrn16_2_oe"
        assert ckpt.origin["arch"] == "inferred" and not isinstance(ckpt.model, torch.jit.ScriptModule)
        assert diff <= 1e-5


def test_explicit_pattern_arch(tmp_path):
    model = build("wrn22_4_oe", 10)
    path = save(model, tmp_path, "plain")
    ckpt = load_checkpoint(path, arch="wrn22_4_oe")
    assert ckpt.origin["arch"] == "flag" and ckpt.probe_layers == ["block1", "block2", "block3"]
    assert torch.allclose(logits(model, batch()), logits(ckpt.model, batch()), atol=1e-5)
