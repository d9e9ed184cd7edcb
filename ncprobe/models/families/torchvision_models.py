"""torchvision's ImageNet classifiers, recognized by their key signatures.

Each member is built with ``torchvision.models.<name>(weights=None, num_classes=C)``, so a
``model.state_dict()`` of a torchvision model (pretrained or fine-tuned to any class count) loads
with strict key matching and no flags. Registered names are ``tv:<torchvision name>``
(``tv:resnet18``, ``tv:vit_b_16``, ...); the bare torchvision names (``resnet18``, ``vgg16_bn``,
``mobilenet_v3_small``, ...) resolve to the same specs through a name pattern (none of them is
another family's name).

Families and what their inferrers read from the shapes:

* ``tv_resnet`` -- resnet18/34/50/101/152, wide_resnet50_2/101_2, resnext50_32x4d,
  resnext101_32x8d/64x4d: basic vs bottleneck (``conv3``), blocks per stage, the bottleneck width
  and groups (``layer1.0.conv2``), the stem kernel. ``tv:resnet{18,34,50}_cifar`` (any of them via
  ``tv:<name>_cifar``) is the common CIFAR adaptation -- ``conv1`` 3x3 stride 1 (weight
  (64, 3, 3, 3) instead of (64, 3, 7, 7)) and ``maxpool = nn.Identity()`` -- same keys otherwise, so
  the shape of ``conv1.weight`` decides. (A 3x3 stem that kept the max-pool has the same keys and
  shapes: indistinguishable; it loads as the ``_cifar`` variant.)
* ``tv_densenet`` -- densenet121/161/169/201: growth rate, stem width, layers per block.
* ``tv_vgg`` -- vgg11..19 with and without BN: the conv configuration from the ``features``
  indices; ``classifier.0`` takes the 7x7x512 = 25088 flattened map (the CIFAR VGGs take 512).
* ``tv_mobilenet`` -- mobilenet_v2, mobilenet_v3_small/large (``features.N.conv`` vs
  ``features.N.block``; the width of the last conv). A 10/100-class MobileNetV2 has exactly the
  keys of the CIFAR MobileNetV2 (``cifar_mobilenetv2_x1_0``, different strides): inference prefers
  that one and lists this one as ambiguous.
* ``tv_efficientnet`` -- efficientnet_b0..b7, efficientnet_v2_s/m/l: the stem width.
* ``tv_convnext`` -- convnext_tiny/small/base/large: stem width, blocks in stage 3.
* ``tv_vit`` -- vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14: width, depth, patch size and the
  position-embedding length; a ViT fine-tuned at another resolution S is ``tv:vit_b_16_{S}`` (built
  with ``image_size=S``).
* ``tv_swin`` -- swin_t/s/b, swin_v2_t/s/b: embed width, blocks in stage 3, v2's ``logit_scale``.
  Swin's stage outputs are channels-last (N, H, W, C); their names are in
  ``extra["channels_last_layers"]``.

Heads: ``fc`` (ResNets), ``classifier`` (DenseNets), ``classifier.6`` (VGG), ``classifier.1``
(MobileNetV2, EfficientNets), ``classifier.3`` (MobileNetV3), ``classifier.2`` (ConvNeXt),
``heads.head`` (ViT), ``head`` (Swin). Inputs: torchvision's evaluation crop of each model's
published weights (224 for most); mean/std are the ImageNet defaults, which is what torchvision's
weights use.
"""

from __future__ import annotations

import math
import re
from functools import partial

from torch import nn

from ...errors import CheckpointError
from ..registry import get_arch, register_arch, register_arch_inferrer, register_arch_pattern
from ..spec import ArchSpec
from ._parts import key_indices, vgg_cfg_from_keys, vgg_pool_names

PREFIX = "tv:"
_SPECS: dict[str, ArchSpec] = {}  # every fixed tv: spec, by name




def _build(fn_name: str, kwargs: dict, cifar_stem: bool, num_classes: int = 1000) -> nn.Module:
    import torchvision.models as tvm  # imported on first build: importing ncprobe stays fast

    model = getattr(tvm, fn_name)(weights=None, num_classes=num_classes, **kwargs)
    if cifar_stem:  # the usual CIFAR adaptation of torchvision's ResNets
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def _make_spec(name: str, fn_name: str, family: str, head: str, probe, size: int, *, kwargs=None,
               cifar_stem: bool = False, extra=None, description: str = "") -> ArchSpec:
    return ArchSpec(
        name=name,
        builder=partial(_build, fn_name, dict(kwargs or {}), cifar_stem),
        head=head,
        probe_layers=tuple(probe),
        input_size=(3, size, size),
        family=family,
        description=description or f"torchvision {fn_name} (weights=None, num_classes=C)",
        default_num_classes=1000,
        extra=dict(extra or {}),
    )


def _add(spec: ArchSpec) -> None:
    register_arch(
        spec.name,
        head=spec.head,
        probe_layers=spec.probe_layers,
        input_size=spec.input_size,
        family=spec.family,
        description=spec.description,
        default_num_classes=spec.default_num_classes,
        extra=dict(spec.extra),
    )(spec.builder)
    _SPECS[spec.name] = get_arch(spec.name)  # the registry's own object, so aliases return it




# ================================================================ ResNet / Wide ResNet / ResNeXt

RESNET_FAMILY = "tv_resnet"
RESNET_PROBE = ("layer1", "layer2", "layer3", "layer4")
# name: (bottleneck, blocks per stage, groups, width_per_group)
RESNETS = {
    "resnet18": (False, (2, 2, 2, 2), 1, 64),
    "resnet34": (False, (3, 4, 6, 3), 1, 64),
    "resnet50": (True, (3, 4, 6, 3), 1, 64),
    "resnet101": (True, (3, 4, 23, 3), 1, 64),
    "resnet152": (True, (3, 8, 36, 3), 1, 64),
    "wide_resnet50_2": (True, (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": (True, (3, 4, 23, 3), 1, 128),
    "resnext50_32x4d": (True, (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": (True, (3, 4, 23, 3), 32, 8),
    "resnext101_64x4d": (True, (3, 4, 23, 3), 64, 4),
}
RESNET_CIFAR_FIXED = ("resnet18", "resnet34", "resnet50")


def _resnet_spec(base: str, cifar: bool) -> ArchSpec:
    bottleneck, blocks, groups, wpg = RESNETS[base]
    kind = "bottleneck" if bottleneck else "basic"
    if cifar:
        return _make_spec(f"{PREFIX}{base}_cifar", base, RESNET_FAMILY, "fc", RESNET_PROBE, 32, cifar_stem=True,
                          description=f"torchvision {base} adapted to 32x32 inputs: conv1 3x3 stride 1, "
                          f"maxpool = Identity ({kind} blocks {blocks})")
    return _make_spec(f"{PREFIX}{base}", base, RESNET_FAMILY, "fc", RESNET_PROBE, 224,
                      description=f"torchvision {base} ({kind} blocks {blocks}, groups {groups}, "
                      f"width/group {wpg})")


_LAYER = re.compile(r"layer([1-4])\.(\d+)\.")


def _infer_resnet(shapes: dict) -> list[str]:
    """Block type and counts, bottleneck width and groups, and the stem kernel (7x7 or 3x3)."""
    stem, c2 = shapes.get("conv1.weight"), shapes.get("layer1.0.conv2.weight")
    if stem is None or c2 is None or "fc.weight" not in shapes or "bn1.weight" not in shapes:
        return []
    if stem[0] != 64 or "layer4.0.conv1.weight" not in shapes or "layer2.0.downsample.0.weight" not in shapes:
        return []
    counts = key_indices(shapes, _LAYER)
    blocks = tuple(len(counts.get(s, ())) for s in "1234")
    bottleneck = "layer1.0.conv3.weight" in shapes
    cifar = stem[2:] == (3, 3)
    if stem[2:] not in ((3, 3), (7, 7)):
        return []

    def fits(name: str) -> tuple:
        b, nb, groups, wpg = RESNETS[name]
        width = wpg * groups  # planes 64 in layer1: int(64 * wpg / 64) * groups
        shape_ok = c2[:2] == ((width, width // groups) if b else (64, 64))
        return (b != bottleneck, nb != blocks, not shape_ok)

    ranked = sorted(RESNETS, key=fits)
    best = [n for n in ranked if not any(fits(n))] or ranked[:1]
    return [f"{PREFIX}{n}_cifar" if cifar else f"{PREFIX}{n}" for n in best]


# ================================================================ DenseNet

DENSE_FAMILY = "tv_densenet"
DENSE_PROBE = ("features.denseblock1", "features.denseblock2", "features.denseblock3", "features.denseblock4")
DENSENETS = {  # growth rate, block config, stem width
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}
_DENSE = re.compile(r"features\.denseblock([1-4])\.denselayer(\d+)\.")


def _infer_densenet(shapes: dict) -> list[str]:
    stem, first = shapes.get("features.conv0.weight"), shapes.get("features.denseblock1.denselayer1.conv2.weight")
    if stem is None or first is None or "classifier.weight" not in shapes:
        return []
    counts = key_indices(shapes, _DENSE)
    got = (first[0], tuple(len(counts.get(s, ())) for s in "1234"), stem[0])
    exact = [f"{PREFIX}{n}" for n, cfg in DENSENETS.items() if cfg == got]
    return exact or [f"{PREFIX}{n}" for n, cfg in DENSENETS.items() if cfg[0] == got[0]]


# ================================================================ VGG

VGG_FAMILY = "tv_vgg"
VGG_CFGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}




def _infer_vgg(shapes: dict) -> list[str]:
    fc0 = shapes.get("classifier.0.weight")
    if fc0 is None or "classifier.6.weight" not in shapes or len(fc0) != 2:
        return []
    found = vgg_cfg_from_keys(shapes, kernel=None)
    if found is None:
        return []
    cfg, bn = found
    last = [v for v in cfg if v != "M"][-1]
    if fc0[1] != last * 7 * 7:  # AdaptiveAvgPool2d((7, 7)) before the classifier
        return []
    return [f"{PREFIX}{n}{'_bn' if bn else ''}" for n, c in VGG_CFGS.items() if c == cfg]


# ================================================================ MobileNets

MOBILE_FAMILY = "tv_mobilenet"
MOBILENETS = {  # name: (head, probe, last features index, its width)
    "mobilenet_v2": ("classifier.1", ("features.3", "features.6", "features.13", "features.17", "features.18"), 18, 1280),
    "mobilenet_v3_small": ("classifier.3", ("features.1", "features.3", "features.8", "features.12"), 12, 576),
    "mobilenet_v3_large": ("classifier.3", ("features.3", "features.6", "features.12", "features.16"), 16, 960),
}
_FEAT = re.compile(r"(features)\.(\d+)\.")


def _infer_mobilenet(shapes: dict) -> list[str]:
    if "features.0.0.weight" not in shapes:
        return []
    last = max(key_indices(shapes, _FEAT)["features"])
    width = shapes[f"features.{last}.0.weight"][0]
    if "features.1.conv.0.0.weight" in shapes and "classifier.1.weight" in shapes:
        names = ["mobilenet_v2"]
    elif "features.1.block.0.0.weight" in shapes and "classifier.3.weight" in shapes:
        names = ["mobilenet_v3_small", "mobilenet_v3_large"]
    else:
        return []
    ranked = sorted(names, key=lambda n: MOBILENETS[n][2:] != (last, width))
    return [f"{PREFIX}{n}" for n in ranked]


# ================================================================ EfficientNet

EFF_FAMILY = "tv_efficientnet"
_EFF_PROBE = ("features.2", "features.3", "features.5", "features.7", "features.8")
EFFICIENTNETS = {  # name: (stem width, eval crop, probe)
    "efficientnet_b0": (32, 224, _EFF_PROBE),
    "efficientnet_b1": (32, 240, _EFF_PROBE),
    "efficientnet_b2": (32, 288, _EFF_PROBE),
    "efficientnet_b3": (40, 300, _EFF_PROBE),
    "efficientnet_b4": (48, 380, _EFF_PROBE),
    "efficientnet_b5": (48, 456, _EFF_PROBE),
    "efficientnet_b6": (56, 528, _EFF_PROBE),
    "efficientnet_b7": (64, 600, _EFF_PROBE),
    "efficientnet_v2_s": (24, 384, ("features.2", "features.3", "features.5", "features.6", "features.7")),
    "efficientnet_v2_m": (24, 480, _EFF_PROBE),
    "efficientnet_v2_l": (32, 480, _EFF_PROBE),
}


def _infer_efficientnet(shapes: dict) -> list[str]:
    stem = shapes.get("features.0.0.weight")
    if stem is None or "features.1.0.block.0.0.weight" not in shapes or "classifier.1.weight" not in shapes:
        return []
    return [f"{PREFIX}{n}" for n, (w, _, _) in EFFICIENTNETS.items() if w == stem[0]]


# ================================================================ ConvNeXt

CONVNEXT_FAMILY = "tv_convnext"
CONVNEXT_PROBE = ("features.1", "features.3", "features.5", "features.7")
CONVNEXTS = {"convnext_tiny": (96, 9), "convnext_small": (96, 27), "convnext_base": (128, 27), "convnext_large": (192, 27)}
_STAGE = re.compile(r"features\.([1357])\.(\d+)\.")


def _infer_convnext(shapes: dict) -> list[str]:
    stem = shapes.get("features.0.0.weight")
    if stem is None or stem[2:] != (4, 4) or "features.1.0.layer_scale" not in shapes:
        return []
    if "classifier.2.weight" not in shapes:
        return []
    blocks = len(key_indices(shapes, _STAGE).get("5", ()))
    got = (stem[0], blocks)
    exact = [n for n, cfg in CONVNEXTS.items() if cfg == got]
    return [f"{PREFIX}{n}" for n in (exact or [n for n, cfg in CONVNEXTS.items() if cfg[0] == stem[0]])]


# ================================================================ ViT

VIT_FAMILY = "tv_vit"
VITS = {  # name: (patch, hidden, layers)
    "vit_b_16": (16, 768, 12),
    "vit_b_32": (32, 768, 12),
    "vit_l_16": (16, 1024, 24),
    "vit_l_32": (32, 1024, 24),
    "vit_h_14": (14, 1280, 32),
}


def _vit_probe(layers: int) -> tuple[str, ...]:
    return tuple(f"encoder.layers.encoder_layer_{(i + 1) * layers // 3 - 1}" for i in range(3))


def _vit_spec(base: str, image_size: int | None = None) -> ArchSpec:
    patch, hidden, layers = VITS[base]
    if image_size is None:
        return _make_spec(f"{PREFIX}{base}", base, VIT_FAMILY, "heads.head", _vit_probe(layers), 224,
                          description=f"torchvision {base} ({layers} layers, width {hidden}, patch {patch}, 224 px)")
    return _make_spec(f"{PREFIX}{base}_{image_size}", base, VIT_FAMILY, "heads.head", _vit_probe(layers), image_size,
                      kwargs={"image_size": image_size},
                      description=f"torchvision {base} built for {image_size} px inputs "
                      f"({(image_size // patch) ** 2} patches)")


_ENC = re.compile(r"encoder\.layers\.encoder_layer_(\d+)\.")


def _infer_vit(shapes: dict) -> list[str]:
    proj, pos = shapes.get("conv_proj.weight"), shapes.get("encoder.pos_embedding")
    if proj is None or pos is None or "class_token" not in shapes or "heads.head.weight" not in shapes:
        return []
    layers = len({int(m.group(1)) for k in shapes if (m := _ENC.match(k))})
    got = (proj[2], proj[0], layers)
    out = []
    for name, cfg in VITS.items():
        if cfg != got:
            continue
        side = math.isqrt(pos[1] - 1)
        if side * side != pos[1] - 1:
            continue
        size = side * cfg[0]
        out.append(f"{PREFIX}{name}" if size == 224 else f"{PREFIX}{name}_{size}")
    return out


# ================================================================ Swin

SWIN_FAMILY = "tv_swin"
SWIN_PROBE = ("features.1", "features.3", "features.5", "features.7")
SWINS = {  # name: (embed width, blocks in stage 3, v2, eval crop)
    "swin_t": (96, 6, False, 224),
    "swin_s": (96, 18, False, 224),
    "swin_b": (128, 18, False, 224),
    "swin_v2_t": (96, 6, True, 256),
    "swin_v2_s": (96, 18, True, 256),
    "swin_v2_b": (128, 18, True, 256),
}


def _infer_swin(shapes: dict) -> list[str]:
    stem = shapes.get("features.0.0.weight")
    if stem is None or "features.1.0.attn.qkv.weight" not in shapes or "head.weight" not in shapes:
        return []
    v2 = "features.1.0.attn.logit_scale" in shapes
    blocks = len(key_indices(shapes, _STAGE).get("5", ()))
    got = (stem[0], blocks, v2)
    exact = [n for n, cfg in SWINS.items() if cfg[:3] == got]
    return [f"{PREFIX}{n}" for n in (exact or [n for n, cfg in SWINS.items() if cfg[0] == stem[0] and cfg[2] == v2])]


# ================================================================ registration

for _n in RESNETS:
    _add(_resnet_spec(_n, cifar=False))
for _n in RESNET_CIFAR_FIXED:
    _add(_resnet_spec(_n, cifar=True))
for _n, (_k, _blocks, _stem) in DENSENETS.items():
    _add(_make_spec(f"{PREFIX}{_n}", _n, DENSE_FAMILY, "classifier", DENSE_PROBE, 224,
                    description=f"torchvision {_n} (k={_k}, blocks {'-'.join(map(str, _blocks))})"))
for _n, _cfg in VGG_CFGS.items():
    for _bn in (False, True):
        _name = _n + ("_bn" if _bn else "")
        _add(_make_spec(f"{PREFIX}{_name}", _name, VGG_FAMILY, "classifier.6", vgg_pool_names(_cfg, _bn), 224))
for _n, (_head, _probe, _, _) in MOBILENETS.items():
    _add(_make_spec(f"{PREFIX}{_n}", _n, MOBILE_FAMILY, _head, _probe, 224))
for _n, (_, _size, _probe) in EFFICIENTNETS.items():
    _add(_make_spec(f"{PREFIX}{_n}", _n, EFF_FAMILY, "classifier.1", _probe, _size))
for _n in CONVNEXTS:
    _add(_make_spec(f"{PREFIX}{_n}", _n, CONVNEXT_FAMILY, "classifier.2", CONVNEXT_PROBE, 224))
for _n in VITS:
    _add(_vit_spec(_n))
for _n, (_, _, _, _size) in SWINS.items():
    _add(_make_spec(f"{PREFIX}{_n}", _n, SWIN_FAMILY, "head", SWIN_PROBE, _size,
                    extra={"channels_last_layers": SWIN_PROBE},
                    description=f"torchvision {_n} (stage outputs are channels-last N,H,W,C)"))


def tv_spec(name: str) -> ArchSpec | None:
    """The spec of ``tv:NAME`` or of a bare torchvision ``NAME`` (fixed or built on demand), else None."""
    full = name if name.startswith(PREFIX) else PREFIX + name
    if full in _SPECS:
        return _SPECS[full]
    base = full[len(PREFIX):]
    if base.endswith("_cifar") and base[: -len("_cifar")] in RESNETS:
        return _resnet_spec(base[: -len("_cifar")], cifar=True)
    m = re.fullmatch(r"(vit_[bhl]_\d+)_(\d+)", base)
    if m and m.group(1) in VITS:
        size, patch = int(m.group(2)), VITS[m.group(1)][0]
        if size % patch == 0 and 0 < size <= 4096:
            return _vit_spec(m.group(1), size)
    return None


_WEIGHT_HASH = re.compile(r"-([0-9a-f]{6,})\.pth$")


def _tv_function(name: str) -> str | None:
    """The torchvision builder behind ``tv:NAME`` (None for the CIFAR adaptations)."""
    base = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if base.endswith("_cifar"):
        return None
    m = re.fullmatch(r"(vit_[bhl]_\d+)_\d+", base)
    return m.group(1) if m and m.group(1) in VITS else base


def tv_eval_config(name: str, sha256: str = "") -> dict | None:
    """The evaluation transform of torchvision's published weights for ``tv:NAME``
    (``weights.transforms()``: resize_size, crop_size, interpolation, mean, std), read without
    downloading anything. Of the weights whose crop is the spec's input size, the one whose file
    hash (the hex in its file name, a prefix of the file's sha256) matches ``sha256``, else the
    first one torchvision lists (its original release, e.g. ``IMAGENET1K_V1``). None when no
    published weights have that crop (the CIFAR variants, an unusual ViT size)."""
    spec = tv_spec(name)
    fn = _tv_function(name)
    if spec is None or fn is None:
        return None
    import torchvision.models as tvm

    try:
        weights = list(tvm.get_model_weights(fn))
    except (ValueError, KeyError):
        return None
    crop = tuple(spec.input_size[1:])
    fitting = []
    for w in weights:
        t = w.transforms()
        if tuple(t.crop_size) * (2 // len(t.crop_size)) == crop and len(t.resize_size) == 1:
            fitting.append((w, t))
    if not fitting:
        return None

    def matches(w) -> bool:
        found = _WEIGHT_HASH.search(str(w.url))
        return bool(sha256) and found is not None and sha256.lower().startswith(found.group(1))

    w, t = next(((w, t) for w, t in fitting if matches(w)), fitting[0])
    side = int(t.resize_size[0])
    return {
        "crop": crop,
        "resize": (side, side),
        "crop_pct": crop[0] / side,
        "interpolation": str(t.interpolation.value),
        "crop_mode": "center",
        "mean": tuple(float(v) for v in t.mean),
        "std": tuple(float(v) for v in t.std),
        "config": f"torchvision {type(w).__name__}.{w.name}" + (" (sha256 match)" if matches(w) else ""),
    }


def _tv_pattern(m: re.Match) -> ArchSpec:
    """``tv:NAME``: a torchvision spec, or a clear error -- never a fall-through to importing a module
    called ``tv`` (what ``get_arch`` does with an unclaimed ``a:b`` name)."""
    spec = tv_spec(m.group(0))
    if spec is None:
        known = ", ".join(sorted(_SPECS))
        raise CheckpointError(f"unknown torchvision architecture {m.group(0)!r}; known: {known}, "
                              "tv:<resnet>_cifar and tv:vit_<size>_<patch>_<image side>")
    return spec


register_arch_pattern(r"tv:(.*)", _tv_pattern)
register_arch_pattern(r"[a-z][a-z0-9_]*", lambda m: tv_spec(m.group(0)))

register_arch_inferrer(RESNET_FAMILY, _infer_resnet)
register_arch_inferrer(DENSE_FAMILY, _infer_densenet)
register_arch_inferrer(VGG_FAMILY, _infer_vgg)
register_arch_inferrer(MOBILE_FAMILY, _infer_mobilenet)
register_arch_inferrer(EFF_FAMILY, _infer_efficientnet)
register_arch_inferrer(CONVNEXT_FAMILY, _infer_convnext)
register_arch_inferrer(VIT_FAMILY, _infer_vit)
register_arch_inferrer(SWIN_FAMILY, _infer_swin)
