"""chenyaofo/pytorch-cifar-models layouts: option-B ResNets, VGG-BN, MobileNetV2, ShuffleNetV2."""

from __future__ import annotations

import pytest
import torch
from family_helpers import (
    LAYOUTS,
    batch,
    build,
    check_all_layouts,
    check_load,
    check_probe_layers,
    check_torchscript,
    duplicate_head_state_dict,
    inferred_on_meta,
    logits,
    save,
)

from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.infer import infer_arch
from ncprobe.models import create_model, get_arch, list_archs
from ncprobe.models.introspect import build_on_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_registry")

FIXED = [f"cifar_resnet{d}_b" for d in (20, 32, 44, 56)] + [f"cifar_vgg{d}_bn" for d in (11, 13, 16, 19)] + [
    f"cifar_mobilenetv2_{w}" for w in ("x0_5", "x0_75", "x1_0", "x1_4")] + [
    f"cifar_shufflenetv2_{w}" for w in ("x0_5", "x1_0", "x1_5", "x2_0")]


@pytest.mark.parametrize("arch, classes", [
    ("cifar_resnet20_b", 10), ("cifar_resnet20_b", 100), ("cifar_vgg11_bn", 10), ("cifar_vgg11_bn", 100),
    ("cifar_mobilenetv2_x0_5", 10), ("cifar_mobilenetv2_x0_5", 100), ("cifar_shufflenetv2_x0_5", 10),
    ("cifar_shufflenetv2_x0_5", 100),
])
def test_every_layout_loads_with_no_flags(tmp_path, arch, classes):
    """plain / state_dict / net / model / module. / safetensors: name, classes and logits."""
    for ckpt in check_all_layouts(tmp_path, arch, classes):
        assert ckpt.metadata["inference"]["ambiguous"] == []


@pytest.mark.parametrize("arch, classes", [("cifar_resnet32_b", 10), ("cifar_resnet44_b", 100),
                                           ("cifar_mobilenetv2_x0_75", 100), ("cifar_shufflenetv2_x1_0", 10)])
def test_other_members_plain(tmp_path, arch, classes):
    check_all_layouts(tmp_path, arch, classes, layouts=("plain",))


@pytest.mark.parametrize("arch", FIXED)
def test_every_fixed_member_is_inferred_from_shapes(arch):
    """Depth (blocks per stage), VGG configuration and widths are read from the shapes (meta, no memory)."""
    for classes in (10, 100):
        inf = inferred_on_meta(arch, classes)
        assert inf.match is not None and inf.match.arch == arch and inf.match.num_classes == classes


def test_depth_and_width_from_shapes_beyond_the_fixed_names():
    """A ResNet-110 and a width-32 ResNet-20 (pattern names) come out of the shapes; so does x1.4."""
    for name in ("cifar_resnet110_b", "cifar_resnet20_b_w32", "cifar_resnet8_b"):
        assert name not in list_archs()
        inf = inferred_on_meta(name, 7)
        assert inf.match.arch == name and inf.match.num_classes == 7
    model = build_on_meta(get_arch("cifar_resnet110_b").builder, num_classes=10)
    assert len(model.layer1) == len(model.layer3) == 18
    # only the depth the keys say is built (no ResNet-1202 to check a ResNet-20)
    inf = inferred_on_meta("cifar_resnet20_b", 10)
    assert not {"cifar_resnet56_b", "cifar_resnet1202", "cifar_resnet110"} & set(inf.checked)


def test_published_parameter_counts():
    """The sizes the collection's README lists (millions, CIFAR-10 heads)."""
    published = {"cifar_resnet20_b": 0.27, "cifar_resnet32_b": 0.47, "cifar_resnet44_b": 0.66, "cifar_resnet56_b": 0.86,
                 "cifar_vgg11_bn": 9.76, "cifar_vgg13_bn": 9.94, "cifar_vgg16_bn": 15.25, "cifar_vgg19_bn": 20.57,
                 "cifar_mobilenetv2_x0_5": 0.70, "cifar_mobilenetv2_x0_75": 1.37, "cifar_mobilenetv2_x1_0": 2.24,
                 "cifar_mobilenetv2_x1_4": 4.33, "cifar_shufflenetv2_x0_5": 0.35, "cifar_shufflenetv2_x1_0": 1.26,
                 "cifar_shufflenetv2_x1_5": 2.49, "cifar_shufflenetv2_x2_0": 5.37}
    for name, millions in published.items():
        model = build_on_meta(get_arch(name).builder, num_classes=10)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions, name


def test_key_layout():
    """The exact key names of the collection's files."""
    keys = set(create_model("cifar_resnet20_b", 10).state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.2.bn2.bias", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_mean", "layer3.2.conv2.weight", "fc.weight", "fc.bias"} <= keys
    assert not any(k.startswith(("layer1.0.downsample", "layer4", "linear")) for k in keys)
    keys = {k: tuple(v.shape) for k, v in build_on_meta(get_arch("cifar_vgg11_bn").builder, num_classes=10).state_dict().items()}
    assert keys["features.0.weight"] == (64, 3, 3, 3) and keys["features.0.bias"] == (64,)
    assert keys["features.1.running_mean"] == (64,) and keys["features.25.weight"] == (512, 512, 3, 3)
    assert (keys["classifier.0.weight"], keys["classifier.3.weight"], keys["classifier.6.weight"]) == (
        (512, 512), (512, 512), (10, 512))
    keys = set(build_on_meta(get_arch("cifar_mobilenetv2_x1_0").builder, num_classes=10).state_dict())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight", "features.2.conv.3.bias",
            "features.18.1.running_var", "classifier.1.weight"} <= keys
    keys = set(build_on_meta(get_arch("cifar_shufflenetv2_x1_0").builder, num_classes=10).state_dict())
    assert {"conv1.0.weight", "stage2.0.branch1.0.weight", "stage2.0.branch2.4.running_mean", "stage4.3.branch2.6.bias",
            "conv5.0.weight", "fc.weight"} <= keys


def test_cifar_strides():
    """32x32 in, 4x4 (MobileNetV2, ShuffleNetV2) or 8x8 (ResNet) before the pool, 1x1 for VGG."""
    assert check_probe_layers("cifar_resnet20_b")["layer3"][-2:] == (8, 8)
    assert check_probe_layers("cifar_vgg16_bn")["features.43"][-2:] == (1, 1)
    seen = check_probe_layers("cifar_mobilenetv2_x1_0")
    assert seen["features.3"][-1] == 32 and seen["features.18"][-1] == 4
    seen = check_probe_layers("cifar_shufflenetv2_x1_0")
    assert seen["stage2"][-1] == 16 and seen["conv5"][-1] == 4


def test_option_a_and_option_b_resnets_are_told_apart(tmp_path):
    """Same depth, same stage names: option A (no shortcut tensors, head 'linear') vs option B."""
    x = batch()
    for arch in ("cifar_resnet20", "cifar_resnet20_b"):
        model = build(arch, 10)
        d = tmp_path / arch
        d.mkdir()
        ckpt = check_load(save(model, d, "plain"), arch, 10, model, x)
        assert ckpt.metadata["inference"]["ambiguous"] == []
    # option-B keys renamed to option-A's head fit neither family exactly
    sd = {("linear." + k[3:] if k.startswith("fc.") else k): v for k, v in create_model("cifar_resnet20_b", 10).state_dict().items()}
    assert infer_arch(sd).match is None


def test_real_option_a_checkpoint_is_not_option_b(shared_data):
    ckpt = load_checkpoint(shared_data / "checkpoints" / "resnet20-12fca82f.th")
    assert ckpt.arch == "cifar_resnet20"


def test_hub_entry_point_names():
    """cifar10_resnet20 / cifar100_vgg16_bn / ...: the hub's own names, classes from the name."""
    for name, canonical, classes in (("cifar10_resnet20", "cifar_resnet20_b", 10), ("cifar100_resnet56", "cifar_resnet56_b", 100),
                                     ("cifar100_vgg16_bn", "cifar_vgg16_bn", 100),
                                     ("cifar10_mobilenetv2_x1_4", "cifar_mobilenetv2_x1_4", 10),
                                     ("cifar100_shufflenetv2_x2_0", "cifar_shufflenetv2_x2_0", 100)):
        spec = get_arch(name)
        assert spec.default_num_classes == classes and spec.family == get_arch(canonical).family
        meta = build_on_meta(spec.builder, num_classes=classes)
        assert {k: v.shape for k, v in meta.state_dict().items()} == {
            k: v.shape for k, v in build_on_meta(get_arch(canonical).builder, num_classes=classes).state_dict().items()}
    for bad in ("cifar10_resnet21", "cifar100_vgg12_bn", "cifar10_shufflenetv2_x3_0"):
        with pytest.raises(Exception, match="unknown architecture"):
            get_arch(bad)


def test_hub_name_as_arch_flag(tmp_path):
    model = build("cifar_resnet20_b", 100)
    path = save(model, tmp_path, "plain")
    ckpt = load_checkpoint(path, arch="cifar100_resnet20")
    assert ckpt.arch == "cifar100_resnet20" and ckpt.num_classes == 100 and ckpt.origin["arch"] == "flag"
    assert torch.allclose(logits(model, batch()), logits(ckpt.model, batch()), atol=1e-5)


def test_mobilenetv2_cifar_vs_torchvision_is_reported_ambiguous():
    """Same keys and shapes as torchvision's MobileNetV2 (only strides differ): a 10-class file is
    taken as the CIFAR variant and the ImageNet one is listed as ambiguous; 1000 classes the reverse."""
    inf = inferred_on_meta("cifar_mobilenetv2_x1_0", 10)
    assert inf.match.arch == "cifar_mobilenetv2_x1_0" and inf.ambiguous == ["tv:mobilenet_v2"]
    inf = inferred_on_meta("cifar_mobilenetv2_x1_0", 1000)
    assert inf.match.arch == "tv:mobilenet_v2" and inf.ambiguous == []


@pytest.mark.parametrize("arch", ["cifar_resnet20_b", "cifar_vgg11_bn", "cifar_mobilenetv2_x0_5", "cifar_shufflenetv2_x0_5"])
def test_torchscript_archives(tmp_path, arch):
    """What load_checkpoint does today with a scripted and a traced archive of each model."""
    for mode in ("script", "trace"):
        ckpt, diff = check_torchscript(tmp_path, arch, 10, mode)
        assert ckpt.metadata["format"] == "torchscript"
        assert ckpt.arch == arch and ckpt.origin["arch"] == "inferred" and ckpt.num_classes == 10
        assert not isinstance(ckpt.model, torch.jit.ScriptModule)
        assert diff <= 1e-5


def test_head_registered_twice_loads(tmp_path):
    """self.classifier = self.fc: the file holds fc.* and classifier.* (the same tensors)."""
    model = build("cifar_resnet20_b", 10)
    sd = duplicate_head_state_dict(model, "fc", "classifier")
    torch.save(sd, tmp_path / "twice.pt")
    ckpt = load_checkpoint(tmp_path / "twice.pt")
    assert ckpt.arch == "cifar_resnet20_b" and ckpt.num_classes == 10
    assert torch.allclose(logits(model, batch()), logits(ckpt.model, batch()), atol=1e-5)


def test_layouts_list_is_complete():
    assert set(LAYOUTS) == {"plain", "state_dict", "net", "model", "module", "safetensors"}
