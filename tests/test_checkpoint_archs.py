"""The built-in architectures: published sizes, the option-A shortcut, names, and the registry."""

from __future__ import annotations

import pkgutil
import sys

import numpy as np
import pytest
import torch

import ncprobe.models.families as archs_pkg
from ncprobe.errors import CheckpointError
from ncprobe.models import create_model, get_arch, list_archs
from ncprobe.models.families.resnet_6n2 import OptionAShortcut
from ncprobe.models.introspect import build_on_meta


def _params(name, num_classes=10) -> int:
    model = build_on_meta(get_arch(name).builder, num_classes=num_classes)  # no memory even for 1202 layers
    return sum(p.numel() for p in model.parameters())


def _he_cifar_params(n: int, classes: int) -> int:
    """Closed form: stem conv+BN, three stages of n blocks (two 3x3 convs + two BNs), linear 64->C."""
    total = 3 * 16 * 9 + 2 * 16
    c_in = 16
    for w in (16, 32, 64):
        total += c_in * w * 9 + w * w * 9  # first block
        total += (n - 1) * 2 * w * w * 9  # other blocks
        total += n * 2 * 2 * w  # two BatchNorms (weight + bias) per block
        c_in = w
    return total + 64 * classes + classes


@pytest.mark.parametrize("depth, published_m", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)])
def test_he_cifar_resnet_sizes(depth, published_m):
    n = (depth - 2) // 6
    count = _params(f"cifar_resnet{depth}")
    assert count == _he_cifar_params(n, 10)
    digits = 2 if published_m < 1 else 1
    assert round(count / 1e6, digits) == published_m  # the sizes He et al. 2016 (Table 6) report


def test_other_family_sizes():
    # widely reported sizes: CIFAR ResNet-18 11.17 M, ResNet-50 23.5 M, WRN-28-10 36.5 M (Zagoruyko 2016)
    assert _params("resnet18_cifar") == 11_173_962
    assert round(_params("resnet50_cifar") / 1e6, 1) == 23.5
    assert round(_params("wrn28_10") / 1e6, 1) == 36.5
    # WRN-d-k: the widths scale with k, so conv weights grow ~k^2
    assert _params("wrn16_8") > 3.5 * _params("wrn16_4")


def test_option_a_shortcut_matches_numpy():
    x = torch.randn(2, 16, 8, 8)
    got = OptionAShortcut(16, 32, 2)(x).numpy()
    sub = x.numpy()[:, :, ::2, ::2]
    want = np.concatenate([np.zeros((2, 8, 4, 4)), sub, np.zeros((2, 8, 4, 4))], axis=1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "name, probes, feat",
    [("cifar_resnet20", ("layer1", "layer2", "layer3"), 64), ("resnet18_cifar", ("layer1", "layer2", "layer3", "layer4"), 512),
     ("wrn16_2", ("layer1", "layer2", "layer3"), 128)],
)
def test_heads_and_probe_layers(name, probes, feat):
    spec = get_arch(name)
    model = create_model(name, 7).eval()
    assert spec.probe_layers == probes and spec.head == "linear"
    head = model.get_submodule(spec.head)
    assert (head.in_features, head.out_features) == (feat, 7)
    seen = {}
    hooks = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o.shape)) for p in probes]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 7) and list(seen) == list(probes)
    assert seen[probes[0]][-1] == 32 and seen[probes[-1]][-1] == 32 // 2 ** (len(probes) - 1)


def test_names_patterns_and_errors():
    required = {f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110, 1202)} | {"resnet18_cifar", "resnet34_cifar",
                                                                             "resnet50_cifar", "wrn28_10", "wrn16_4",
                                                                             "wrn28_2", "wrn40_2"}
    assert required <= set(list_archs())
    assert get_arch("wrn22_3").name == "wrn22_3" and "wrn22_3" not in list_archs()
    assert _params("wrn22_3") > 0 and get_arch("cifar_resnet74").probe_layers == ("layer1", "layer2", "layer3")
    for bad in ("cifar_resnet21", "wrn23_2", "resnet9000"):
        with pytest.raises(CheckpointError, match="unknown architecture"):
            get_arch(bad)


def test_every_module_in_the_archs_package_registers():
    """models/families imports its modules dynamically, so a new family (small_cnn) needs no edit."""
    for info in pkgutil.iter_modules(archs_pkg.__path__):
        assert f"{archs_pkg.__name__}.{info.name}" in sys.modules
    families = {get_arch(n).family for n in list_archs()}
    assert {"cifar_resnet", "resnet_cifar", "wide_resnet"} <= families
