"""torchvision classifiers recognized by key signature (tv:NAME, and the bare torchvision names).

The reference models are built with torchvision directly (not through ncprobe's specs), so these
tests check that a user's own torchvision state_dict loads with no flags.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision.models as tvm
from family_helpers import (
    LAYOUTS,
    batch,
    check_all_layouts,
    check_probe_layers,
    check_torchscript,
    inferred_on_meta,
    logits,
    randomize,
    save,
)
from torch import nn

from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.infer import infer_arch
from ncprobe.errors import CheckpointError
from ncprobe.models import get_arch, list_archs
from ncprobe.models.families import torchvision_models as tvfam
from ncprobe.models.introspect import build_on_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_registry")

TV_NAMES = sorted(tvfam._SPECS)
# the members whose meta build alone takes a noticeable time: their signature checks are 'slow'
_LARGE = ("resnet152", "resnext101", "wide_resnet101", "densenet161", "densenet169", "densenet201", "efficientnet_b",
          "efficientnet_v2_m", "efficientnet_v2_l", "convnext_large", "convnext_base", "vit_l", "vit_h", "swin_s", "swin_b",
          "swin_v2_s", "swin_v2_b")
SIGNATURE_CASES = [pytest.param(n, marks=pytest.mark.slow) if n[3:].startswith(_LARGE) and n != "tv:efficientnet_b0"
                   else n for n in TV_NAMES]


def _tv(name: str, num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize(getattr(tvm, name)(weights=None, num_classes=num_classes), seed)


def _tv_cifar_resnet18(num_classes: int) -> nn.Module:
    """The usual recipe: torchvision resnet18, conv1 -> 3x3 stride 1, maxpool -> Identity."""
    torch.manual_seed(0)
    model = tvm.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return randomize(model)


@pytest.mark.parametrize("classes", [1000, 10])
def test_plain_torchvision_resnet18_loads_with_no_flags(tmp_path, classes):
    model = _tv("resnet18", classes)
    layouts = LAYOUTS if classes == 10 else ("plain", "safetensors")
    for ckpt in check_all_layouts(tmp_path, "tv:resnet18", classes, layouts=layouts, n=1, model=model,
                                  input_size=(3, 64, 64)):
        assert ckpt.metadata["inference"]["ambiguous"] == [] and ckpt.input_size == (3, 224, 224)


def test_cifar_resnet18_variant_is_decided_by_the_stem_shape(tmp_path):
    model = _tv_cifar_resnet18(10)
    ckpt = check_all_layouts(tmp_path, "tv:resnet18_cifar", 10, layouts=("plain", "module"), n=1, model=model)[0]
    assert ckpt.input_size == (3, 32, 32) and ckpt.metadata["inference"]["ambiguous"] == []
    assert isinstance(ckpt.model.maxpool, nn.Identity) and ckpt.model.conv1.weight.shape == (64, 3, 3, 3)
    sd = model.state_dict()
    imagenet = build_on_meta(tvm.resnet18, num_classes=10).state_dict()
    assert set(sd) == set(imagenet)  # same keys ...
    assert [k for k in sd if sd[k].shape != imagenet[k].shape] == ["conv1.weight"]  # ... one shape differs
    assert inferred_on_meta("tv:resnet18", 10).match.arch == "tv:resnet18"
    # nor is either taken for the kuangliu-style resnet18_cifar (shortcut.*, linear)
    assert inferred_on_meta("resnet18_cifar", 10).match.arch == "resnet18_cifar"


@pytest.mark.parametrize("name", SIGNATURE_CASES)
def test_every_member_inferred_from_its_signature(name):
    """Meta builds (no memory): the name and the class count come back from keys and shapes."""
    for classes in ((1000, 17) if name in ("tv:resnet18", "tv:mobilenet_v2", "tv:vit_b_16", "tv:swin_t") else (17,)):
        inf = inferred_on_meta(name, classes)
        if name == "tv:mobilenet_v2" and classes != 1000:  # = cifar_mobilenetv2_x1_0's keys and shapes
            assert inf.match.arch == "cifar_mobilenetv2_x1_0" and name in inf.ambiguous
            continue
        assert inf.match is not None and inf.match.arch == name and inf.match.num_classes == classes
        assert inf.ambiguous == []
        assert len(inf.checked) <= 12  # the inferrers propose few members


def test_pattern_members():
    """tv:<resnet>_cifar for every ResNet, and ViTs fine-tuned at another resolution."""
    for name in ("tv:resnet101_cifar", "tv:wide_resnet50_2_cifar", "tv:vit_b_16_384", "tv:vit_b_32_384"):
        assert name not in list_archs()
        inf = inferred_on_meta(name, 10)
        assert inf.match.arch == name and inf.match.num_classes == 10
    spec = get_arch("tv:vit_b_16_384")
    assert spec.input_size == (3, 384, 384)
    assert build_on_meta(spec.builder, num_classes=5).encoder.pos_embedding.shape == (1, 577, 768)
    for bad in ("tv:resnet19", "tv:vit_b_16_383", "tv:nonsense", "tv:os.path:join"):
        with pytest.raises(CheckpointError, match="unknown torchvision architecture"):
            get_arch(bad)


def test_bare_torchvision_names(tmp_path):
    """resnet18, vgg16_bn, ...: the tv: specs; no registered name of another family is shadowed
    (bare resnet{18,34,50}_cifar stay the kuangliu-layout ResNets: tv's CIFAR variants need tv:)."""
    others = {n for n in list_archs() if not n.startswith("tv:")}
    for full in TV_NAMES:
        bare = full[len("tv:"):]
        if bare in others:
            assert bare.endswith("_cifar") and get_arch(bare).family == "resnet_cifar"
        else:
            assert get_arch(bare) is get_arch(full)
    assert get_arch("resnet18_cifar").family == "resnet_cifar"  # kuangliu's, not tv:resnet18_cifar
    assert get_arch("resnet101_cifar").family == "resnet_cifar"
    assert get_arch("wide_resnet50_2_cifar") is not None and get_arch("cifar_resnet20").family == "cifar_resnet"
    model = _tv("resnet18", 7)
    path = save(model, tmp_path, "plain")
    ckpt = load_checkpoint(path, arch="resnet18")
    assert ckpt.arch == "resnet18" and ckpt.num_classes == 7 and ckpt.origin["arch"] == "flag"
    x = batch((3, 64, 64), 1)
    assert (logits(model, x) - logits(ckpt.model, x)).abs().max() <= 1e-5


@pytest.mark.parametrize("name, classes, side", [
    ("mobilenet_v2", 1000, 64), ("mobilenet_v3_small", 10, 64), ("mobilenet_v3_large", 100, 64),
    ("densenet121", 10, 64), ("efficientnet_b0", 10, 64), ("resnet50", 10, 64),
])
def test_logits_of_the_small_models(tmp_path, name, classes, side):
    check_all_layouts(tmp_path, f"tv:{name}", classes, layouts=("plain",), n=1, model=_tv(name, classes),
                      input_size=(3, side, side))


@pytest.mark.slow
@pytest.mark.parametrize("name, side", [("vgg16_bn", 32), ("wide_resnet50_2", 64), ("convnext_tiny", 64),
                                        ("swin_t", 64), ("vit_b_16", 224)])
def test_logits_of_the_large_models(tmp_path, name, side):
    check_all_layouts(tmp_path, f"tv:{name}", 5, layouts=("safetensors",), n=1, model=_tv(name, 5),
                      input_size=(3, side, side))


@pytest.mark.parametrize("name", ["tv:resnet18", "tv:resnet18_cifar", "tv:densenet121", "tv:vgg16_bn", "tv:mobilenet_v2",
                                  "tv:mobilenet_v3_small", "tv:mobilenet_v3_large", "tv:efficientnet_b0",
                                  "tv:convnext_tiny", "tv:vit_b_16", "tv:swin_t"])
def test_probe_layers_are_stage_outputs(name):
    seen = check_probe_layers(name, 10, channels_last=name.startswith("tv:swin"))
    if name.startswith("tv:vit"):
        assert list(seen) == ["encoder.layers.encoder_layer_3", "encoder.layers.encoder_layer_7",
                              "encoder.layers.encoder_layer_11"]
    else:  # a 4-D map at each, getting smaller
        assert all(len(s) == 4 for s in seen.values()) and len(seen) >= 4
    if name.startswith("tv:swin"):
        assert get_arch(name).extra["channels_last_layers"] == get_arch(name).probe_layers


def test_heads():
    heads = {"tv:resnet18": "fc", "tv:densenet121": "classifier", "tv:vgg16_bn": "classifier.6",
             "tv:mobilenet_v2": "classifier.1", "tv:mobilenet_v3_small": "classifier.3", "tv:efficientnet_b0": "classifier.1",
             "tv:convnext_tiny": "classifier.2", "tv:vit_b_16": "heads.head", "tv:swin_t": "head"}
    for name, head in heads.items():
        assert get_arch(name).head == head
        model = build_on_meta(get_arch(name).builder, num_classes=3)
        assert isinstance(model.get_submodule(head), nn.Linear) and model.get_submodule(head).out_features == 3


def test_not_confused_with_the_cifar_families():
    """torchvision VGG (25088-input classifier) vs the CIFAR VGGs; tv DenseNet vs CIFAR DenseNets."""
    assert inferred_on_meta("tv:vgg11_bn", 10).match.arch == "tv:vgg11_bn"
    assert inferred_on_meta("cifar_vgg11_bn", 10).match.arch == "cifar_vgg11_bn"
    assert inferred_on_meta("vgg11_cifar", 10).match.arch == "vgg11_cifar"
    assert inferred_on_meta("tv:densenet121", 10).match.arch == "tv:densenet121"
    assert inferred_on_meta("densenet121_cifar", 10).match.arch == "densenet121_cifar"


@pytest.mark.parametrize("name, side", [("resnet18", 64), ("mobilenet_v3_small", 64)])
def test_torchscript_archives(tmp_path, name, side):
    for mode in ("script", "trace"):
        ckpt, diff = check_torchscript(tmp_path, f"tv:{name}", 10, mode, n=1, model=_tv(name, 10),
                                       input_size=(3, side, side))
        assert ckpt.metadata["format"] == "torchscript" and ckpt.arch == f"tv:{name}"
        assert ckpt.origin["arch"] == "inferred" and not isinstance(ckpt.model, torch.jit.ScriptModule)
        assert diff <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name, side", [("convnext_tiny", 64), ("swin_t", 64), ("vit_b_16", 224)])
def test_torchscript_archives_of_the_large_models(tmp_path, name, side):
    ckpt, diff = check_torchscript(tmp_path, f"tv:{name}", 5, "script", n=1, model=_tv(name, 5),
                                   input_size=(3, side, side))
    assert ckpt.arch == f"tv:{name}" and not isinstance(ckpt.model, torch.jit.ScriptModule) and diff <= 1e-5


def test_inferrers_ignore_unrelated_and_odd_files():
    """Every family's inferrer returns nothing (never raises) on files that are not its own."""
    from ncprobe.models.registry import family_inferrers

    odd = {"features.0.0.weight": (3,), "conv1.weight": (64,), "fc.weight": (), "layer1.0.conv2.weight": (1, 2),
           "encoder.pos_embedding": (1, 2), "conv_proj.weight": (7,), "class_token": (1,), "heads.head.weight": (3, 4)}
    for fam, fn in family_inferrers().items():
        assert isinstance(fn(odd), list), fam
        assert fn({"enc.weight": (4, 4)}) == [], fam
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert infer_arch({"enc.weight": torch.zeros(4, 4)}).match is None
