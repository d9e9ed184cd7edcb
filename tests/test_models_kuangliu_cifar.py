"""kuangliu/pytorch-cifar layouts: PreActResNet, VGG, MobileNetV2, DenseNet (ResNets: resnet_4stage)."""

from __future__ import annotations

import pytest
import torch
from family_helpers import (
    batch,
    build,
    check_all_layouts,
    check_load,
    check_probe_layers,
    check_torchscript,
    inferred_on_meta,
    save,
)

from ncprobe.models import get_arch, list_archs
from ncprobe.models.introspect import build_on_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_registry")


def _params(name: str, classes: int = 10) -> int:
    return sum(p.numel() for p in build_on_meta(get_arch(name).builder, num_classes=classes).parameters())


def _shapes(name: str, classes: int = 10) -> dict:
    return {k: tuple(v.shape) for k, v in build_on_meta(get_arch(name).builder, num_classes=classes).state_dict().items()}


@pytest.mark.parametrize("arch, classes", [("preactresnet18_cifar", 10), ("vgg11_cifar", 100),
                                           ("mobilenetv2_cifar", 10), ("densenet_cifar", 100)])
def test_every_layout_loads_with_no_flags(tmp_path, arch, classes):
    for ckpt in check_all_layouts(tmp_path, arch, classes, n=1):
        assert ckpt.metadata["inference"]["ambiguous"] == []


@pytest.mark.parametrize("arch, classes", [("preactresnet18_cifar_bn", 100), ("vgg11_cifar", 10),
                                           ("mobilenetv2_cifar", 100), ("densenet121_cifar", 10)])
def test_plain_state_dicts(tmp_path, arch, classes):
    check_all_layouts(tmp_path, arch, classes, layouts=("plain",), n=1)


@pytest.mark.parametrize("arch", ["preactresnet18_cifar", "preactresnet34_cifar", "preactresnet50_cifar",
                                  "preactresnet101_cifar_bn", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar",
                                  "densenet121_cifar", "densenet161_cifar", "densenet169_cifar", "densenet201_cifar",
                                  "densenet_cifar_k24_4_8_16_8"])
def test_inferred_from_shapes(arch):
    """Blocks per stage, block type, VGG configuration, growth rate: read from the shapes (meta build)."""
    for classes in (10, 100):
        inf = inferred_on_meta(arch, classes)
        assert inf.match is not None and inf.match.arch == arch and inf.match.num_classes == classes
        assert inf.ambiguous == []


def test_resnets_are_the_existing_family(tmp_path):
    """kuangliu's ResNet18/34/50 are resnet{18,34,50}_cifar (resnet_4stage); not registered twice."""
    assert not {"resnet18_kuangliu", "kuangliu_resnet18"} & set(list_archs())
    model = build("resnet18_cifar", 10)
    ckpt = check_load(save(model, tmp_path, "plain"), "resnet18_cifar", 10, model, batch(n=1))
    assert ckpt.metadata["inference"]["ambiguous"] == []
    # pre-activation vs post-activation at the same depth: never the other one
    assert inferred_on_meta("preactresnet18_cifar", 10).match.arch == "preactresnet18_cifar"
    assert inferred_on_meta("resnet18_cifar", 10).match.arch == "resnet18_cifar"


def test_published_sizes():
    """Sizes usually quoted for these networks on CIFAR-10 (millions)."""
    assert _params("preactresnet18_cifar") == 11_171_146
    assert round(_params("vgg16_cifar") / 1e6, 2) == 14.73
    assert round(_params("mobilenetv2_cifar") / 1e6, 2) == 2.30
    assert round(_params("densenet121_cifar") / 1e6, 2) == 6.96
    assert round(_params("densenet_cifar") / 1e6, 2) == 1.00


def test_key_layouts():
    k = _shapes("preactresnet18_cifar")
    assert "bn1.weight" not in k and "bn.weight" not in k and k["conv1.weight"] == (64, 3, 3, 3)
    assert k["layer2.0.bn1.weight"] == (64,)  # pre-activation: BN over the block's input
    assert k["layer2.0.shortcut.0.weight"] == (128, 64, 1, 1) and "layer2.0.shortcut.1.weight" not in k
    assert "layer1.0.shortcut.0.weight" not in k and k["linear.weight"] == (10, 512)
    assert _shapes("preactresnet18_cifar_bn")["bn.weight"] == (512,)
    k = _shapes("preactresnet50_cifar")
    assert k["layer1.0.conv3.weight"] == (256, 64, 1, 1) and k["layer1.0.shortcut.0.weight"] == (256, 64, 1, 1)
    k = _shapes("vgg11_cifar")
    assert k["classifier.weight"] == (10, 512) and k["features.25.weight"] == (512, 512, 3, 3)
    assert "features.29.weight" not in k  # the trailing AvgPool2d(1) has no weights
    k = _shapes("mobilenetv2_cifar")
    assert k["conv1.weight"] == (32, 3, 3, 3) and k["layers.0.conv1.weight"] == (32, 32, 1, 1)
    assert k["layers.0.conv2.weight"] == (32, 1, 3, 3) and k["layers.0.shortcut.0.weight"] == (16, 32, 1, 1)
    # kuangliu's quirk: a stride-1 block whose width changes gets a 1x1 conv + BN shortcut (16 -> 24 at
    # stride 1 after the CIFAR change); stride-2 blocks have no residual at all
    assert k["layers.1.shortcut.0.weight"] == (24, 16, 1, 1) and k["layers.1.shortcut.1.running_mean"] == (24,)
    assert not any(key.startswith(("layers.3.shortcut", "layers.2.shortcut")) for key in k)
    k = _shapes("densenet121_cifar")
    assert k["conv1.weight"] == (64, 3, 3, 3) and k["dense1.0.conv1.weight"] == (128, 64, 1, 1)
    assert k["dense1.0.conv2.weight"] == (32, 128, 3, 3) and k["trans1.conv.weight"] == (128, 256, 1, 1)
    assert k["dense4.15.conv2.weight"] == (32, 128, 3, 3) and k["bn.weight"] == (1024,)
    assert k["linear.weight"] == (10, 1024)


def test_densenet_puts_new_features_first():
    """kuangliu's layer returns cat([out, x]): the first k channels are the new ones."""
    model = build("densenet_cifar", 10)
    layer = model.dense1[0]
    x = torch.randn(1, 24, 8, 8)
    with torch.no_grad():
        out = layer(x)
    assert torch.equal(out[:, 12:], x) and not torch.equal(out[:, :24], x)


@pytest.mark.parametrize("arch", ["preactresnet18_cifar", "vgg16_cifar", "mobilenetv2_cifar", "densenet121_cifar"])
def test_probe_layers(arch):
    seen = check_probe_layers(arch)
    first, last = list(seen.values())[0][-1], list(seen.values())[-1][-1]
    assert first == (16 if arch.startswith("vgg") else 32) and last == (1 if arch.startswith("vgg") else 4)


@pytest.mark.parametrize("arch", ["preactresnet18_cifar", "vgg11_cifar", "mobilenetv2_cifar", "densenet_cifar"])
def test_torchscript_archives(tmp_path, arch):
    ckpt, diff = check_torchscript(tmp_path, arch, 10, "script", n=1)
    assert ckpt.metadata["format"] == "torchscript" and ckpt.arch == arch and ckpt.origin["arch"] == "inferred"
    assert not isinstance(ckpt.model, torch.jit.ScriptModule) and diff <= 1e-5
