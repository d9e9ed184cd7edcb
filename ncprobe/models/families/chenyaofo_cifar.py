"""The CIFAR-10/100 models of the torch.hub collection ``chenyaofo/pytorch-cifar-models``.

Four architectures, each with the key layout of that collection's published weights (so its
``cifar10_*`` / ``cifar100_*`` files load with strict key matching):

* **ResNet-20/32/44/56 with option-B shortcuts** (He et al. 2016, section 4.2, but projection
  shortcuts): ``conv1`` 3x3 3->16 + ``bn1`` + ReLU, no max-pool; ``layer1..3`` of n basic blocks
  (``conv1/bn1/conv2/bn2``) with 16/32/64 channels and strides 1/2/2 (depth 6n+2); where the shape
  changes the shortcut is ``downsample.0`` (1x1 conv, stride 2, no bias) + ``downsample.1`` (BN);
  global average pool; ``fc`` 64 -> C. Same names as torchvision's ResNet, which is why the option-A
  CIFAR ResNets (``cifar_resnet20``: no shortcut tensors, head ``linear``) are a different family.
* **VGG-11/13/16/19 with BatchNorm** (Simonyan & Zisserman 2015): ``features`` a Sequential of
  conv3x3(bias)-BN-ReLU triples and 2x2 max-pools (five pools: 32 -> 1), ``classifier`` a Sequential
  Linear(512, 512)-ReLU-Dropout-Linear(512, 512)-ReLU-Dropout-Linear(512, C) (keys
  ``classifier.0/3/6``; head ``classifier.6``).
* **MobileNetV2** (Sandler et al. 2018), torchvision's key layout (``features.0.0``,
  ``features.N.conv.*``, ``features.18``, ``classifier.1``) with the two CIFAR changes: stem stride 1
  and the first 24-channel block stride 1 (32 -> 4 instead of 224 -> 7). Width multipliers 0.5,
  0.75, 1.0, 1.4.
* **ShuffleNetV2** (Ma et al. 2018), torchvision's key layout (``conv1.0/1``, ``stage2..4``,
  ``conv5.0/1``, ``fc``) with the stem at stride 1 and no max-pool. Widths x0.5/x1.0/x1.5/x2.0.

MobileNetV2 and ShuffleNetV2 are built from torchvision's classes with those strides changed: the
keys *and shapes* are then exactly torchvision's, so a state_dict alone cannot tell the CIFAR
variant from an ImageNet one. The inferrer proposes the CIFAR variants only when the head does not
have 1000 classes; a CIFAR MobileNetV2 file also fits ``tv:mobilenet_v2`` and inference reports it
as ``ambiguous``.

Names: ``cifar_resnet{20,32,44,56}_b`` (pattern ``cifar_resnet{6n+2}_b`` and ``..._b_w{W}`` for a
stem width W other than 16), ``cifar_vgg{11,13,16,19}_bn``, ``cifar_mobilenetv2_x{0_5,0_75,1_0,1_4}``,
``cifar_shufflenetv2_x{0_5,1_0,1_5,2_0}``; and the hub's own entry-point names
``cifar10_resnet20``, ``cifar100_vgg16_bn``, ``cifar10_mobilenetv2_x1_4``, ... (a pattern; same
models, default class count from the name). The hub's normalization (CIFAR-10 mean
(0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010); CIFAR-100 (0.5070, 0.4865, 0.4409),
(0.2673, 0.2564, 0.2762)) is not implied by the keys, so the specs keep the defaults.
"""

from __future__ import annotations

import re
from functools import partial

import torch
from torch import nn

from ..registry import register_arch_inferrer, register_arch_pattern, register_spec
from ..spec import ArchSpec
from ._parts import key_indices, vgg_cfg_from_keys, vgg_pool_names

CIFAR = (3, 32, 32)
IMAGENET_CLASSES = 1000






# ================================================================ ResNet, option-B shortcuts

RESNET_FAMILY = "cifar_resnet_b"
RESNET_DEPTHS = (20, 32, 44, 56)
RESNET_PROBE = ("layer1", "layer2", "layer3")


class BasicBlockB(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (identity, or 1x1 conv + BN), then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNetB(nn.Module):
    """CIFAR ResNet of depth 6n+2, stage widths w/2w/4w (w = 16), projection shortcuts, head ``fc``."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 or width < 1:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(width, width, n, 1)
        self.layer2 = self._stage(width, 2 * width, n, 2)
        self.layer3 = self._stage(2 * width, 4 * width, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlockB(inplanes, planes, stride)]
        layers += [BasicBlockB(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def _resnet_name(depth: int, width: int = 16) -> str:
    return f"cifar_resnet{depth}_b" + ("" if width == 16 else f"_w{width}")


def _resnet_spec(depth: int, width: int = 16, num_classes: int = 10, name: str | None = None) -> ArchSpec | None:
    if depth < 8 or (depth - 2) % 6 or width < 1:
        return None
    return ArchSpec(
        name=name or _resnet_name(depth, width),
        builder=partial(_build_resnet, depth, width),
        head="fc",
        probe_layers=RESNET_PROBE,
        input_size=CIFAR,
        family=RESNET_FAMILY,
        description=f"CIFAR ResNet-{depth} with option-B (1x1 conv + BN) shortcuts, "
        f"{width}/{2 * width}/{4 * width} channels, head fc (chenyaofo/pytorch-cifar-models layout)",
        default_num_classes=num_classes,
    )


def _build_resnet(depth: int, width: int, num_classes: int = 10) -> CifarResNetB:
    return CifarResNetB(depth=depth, num_classes=num_classes, width=width)


_RES_BLOCK = re.compile(r"layer([1-9])\.(\d+)\.")


def _infer_resnet(shapes: dict) -> list[str]:
    """Depth from the blocks per stage, width from the stem; needs ``downsample`` shortcuts and ``fc``."""
    if "fc.weight" not in shapes or "layer2.0.downsample.0.weight" not in shapes:
        return []
    stem = shapes.get("conv1.weight")
    if stem is None or len(stem) != 4 or stem[2:] != (3, 3):
        return []
    counts = key_indices(shapes, _RES_BLOCK)
    if set(counts) != {"1", "2", "3"} or any(".conv3." in k for k in shapes):
        return []  # four stages (torchvision) or bottlenecks: another family
    n = max(len(v) for v in counts.values())
    return [_resnet_name(6 * n + 2, stem[0])]


# ================================================================ VGG with BatchNorm

VGG_FAMILY = "cifar_vgg_bn"
VGG_CFGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def vgg_features(cfg, batch_norm: bool = True, in_channels: int = 3) -> nn.Sequential:
    """conv3x3(bias)-[BN]-ReLU per number, MaxPool2d(2) per 'M' (the torchvision/hub layout)."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c = v
    return nn.Sequential(*layers)





class CifarVGG(nn.Module):
    """VGG-BN for 32x32 inputs: ``features`` (five pools, 512 x 1 x 1 out), 3-layer ``classifier``."""

    def __init__(self, cfg, num_classes: int = 10, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.features = vgg_features(cfg, batch_norm=True)
        last = [v for v in cfg if v != "M"][-1]
        self.classifier = nn.Sequential(
            nn.Linear(last, hidden),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _build_vgg(depth: int, num_classes: int = 10) -> CifarVGG:
    return CifarVGG(VGG_CFGS[depth], num_classes=num_classes)


def _vgg_spec(depth: int, num_classes: int = 10, name: str | None = None) -> ArchSpec | None:
    if depth not in VGG_CFGS:
        return None
    return ArchSpec(
        name=name or f"cifar_vgg{depth}_bn",
        builder=partial(_build_vgg, depth),
        head="classifier.6",
        probe_layers=vgg_pool_names(VGG_CFGS[depth]) + ("classifier.1",),
        input_size=CIFAR,
        family=VGG_FAMILY,
        description=f"VGG-{depth}-BN for 32x32 inputs, classifier 512-512-512-C "
        "(chenyaofo/pytorch-cifar-models layout)",
        default_num_classes=num_classes,
    )


def _infer_vgg(shapes: dict) -> list[str]:
    """The conv configuration from the ``features`` indices; a 3-Linear classifier on 1x1 maps."""
    fc0, fc6 = shapes.get("classifier.0.weight"), shapes.get("classifier.6.weight")
    if fc0 is None or fc6 is None or "classifier.3.weight" not in shapes:
        return []
    found = vgg_cfg_from_keys(shapes)
    if found is None or not found[1]:
        return []
    cfg, _ = found
    last = [v for v in cfg if v != "M"][-1]
    if fc0[1] != last:  # torchvision's VGG flattens a 7x7 map: 25088 inputs
        return []
    return [f"cifar_vgg{d}_bn" for d, c in VGG_CFGS.items() if c == cfg]


# ================================================================ MobileNetV2 (CIFAR strides)

MNV2_FAMILY = "cifar_mobilenetv2"
MNV2_WIDTHS = (0.5, 0.75, 1.0, 1.4)
# stage ends (the last block before each resolution drop, then the final blocks): 32, 16, 8, 4, 4
MNV2_PROBE = ("features.3", "features.6", "features.13", "features.17", "features.18")


def _wm_tag(width_mult: float) -> str:
    whole, _, frac = f"{width_mult:g}".partition(".")
    return f"x{whole}_{frac or '0'}"


def _wm_from_tag(whole: str, frac: str) -> float:
    return float(f"{int(whole)}.{frac}")


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of ``divisor``, never more than 10% below ``v`` (MobileNet's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def cifar_mobilenet_v2(width_mult: float = 1.0, num_classes: int = 10) -> nn.Module:
    """torchvision's MobileNetV2 with the stem and the first 24-channel block at stride 1."""
    from torchvision.models import (
        MobileNetV2,  # imported on first build: importing ncprobe stays fast
    )

    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)  # expand (0), depthwise (1), project (2), BN (3)
    return model


def _mnv2_spec(width_mult: float, num_classes: int = 10, name: str | None = None) -> ArchSpec | None:
    if not 0.1 <= width_mult <= 4:
        return None
    return ArchSpec(
        name=name or f"cifar_mobilenetv2_{_wm_tag(width_mult)}",
        builder=partial(cifar_mobilenet_v2, width_mult),
        head="classifier.1",
        probe_layers=MNV2_PROBE,
        input_size=CIFAR,
        family=MNV2_FAMILY,
        description=f"MobileNetV2 x{width_mult:g} for 32x32 inputs (stem and stage-2 stride 1; torchvision keys; "
        "chenyaofo/pytorch-cifar-models)",
        default_num_classes=num_classes,
    )


_FEATURES = re.compile(r"(features)\.(\d+)\.")


def _infer_mnv2(shapes: dict) -> list[str]:
    """Width multiplier from the stem and last conv widths; not proposed for 1000-class heads."""
    head = shapes.get("classifier.1.weight")
    stem = shapes.get("features.0.0.weight")
    if head is None or stem is None or "features.1.conv.0.0.weight" not in shapes or head[0] == IMAGENET_CLASSES:
        return []
    last_idx = max(key_indices(shapes, _FEATURES)["features"])
    last = shapes.get(f"features.{last_idx}.0.weight")
    if last is None or last_idx != 18:
        return []
    out = []
    guesses = list(MNV2_WIDTHS) + [round(stem[0] / 32, 2)]
    for wm in guesses:
        if _make_divisible(32 * wm, 8) == stem[0] and _make_divisible(1280 * max(1.0, wm), 8) == last[0]:
            name = f"cifar_mobilenetv2_{_wm_tag(wm)}"
            if name not in out:
                out.append(name)
    return out


# ================================================================ ShuffleNetV2 (CIFAR stem)

SHUFFLE_FAMILY = "cifar_shufflenetv2"
SHUFFLE_REPEATS = (4, 8, 4)
SHUFFLE_WIDTHS = {
    "x0_5": (24, 48, 96, 192, 1024),
    "x1_0": (24, 116, 232, 464, 1024),
    "x1_5": (24, 176, 352, 704, 1024),
    "x2_0": (24, 244, 488, 976, 2048),
}
SHUFFLE_PROBE = ("stage2", "stage3", "stage4", "conv5")


def cifar_shufflenet_v2(tag: str = "x1_0", num_classes: int = 10) -> nn.Module:
    """torchvision's ShuffleNetV2 with a stride-1 stem and no max-pool (32 -> 16 -> 8 -> 4)."""
    from torchvision.models import ShuffleNetV2

    model = ShuffleNetV2(list(SHUFFLE_REPEATS), list(SHUFFLE_WIDTHS[tag]), num_classes=num_classes)
    model.conv1[0].stride = (1, 1)
    model.maxpool = nn.Identity()
    return model


def _shuffle_spec(tag: str, num_classes: int = 10, name: str | None = None) -> ArchSpec | None:
    if tag not in SHUFFLE_WIDTHS:
        return None
    return ArchSpec(
        name=name or f"cifar_shufflenetv2_{tag}",
        builder=partial(cifar_shufflenet_v2, tag),
        head="fc",
        probe_layers=SHUFFLE_PROBE,
        input_size=CIFAR,
        family=SHUFFLE_FAMILY,
        description=f"ShuffleNetV2 {tag.replace('_', '.')} for 32x32 inputs (stride-1 stem, no max-pool; "
        "torchvision keys; chenyaofo/pytorch-cifar-models)",
        default_num_classes=num_classes,
    )


_STAGE = re.compile(r"stage([2-4])\.(\d+)\.")


def _infer_shuffle(shapes: dict) -> list[str]:
    """Stage widths from the first block's branches, repeats from the block counts."""
    head, conv5 = shapes.get("fc.weight"), shapes.get("conv5.0.weight")
    if head is None or conv5 is None or "stage2.0.branch1.0.weight" not in shapes or head[0] == IMAGENET_CLASSES:
        return []
    counts = key_indices(shapes, _STAGE)
    repeats = tuple(len(counts.get(s, ())) for s in "234")
    widths = tuple(2 * shapes[f"stage{s}.0.branch2.0.weight"][0] for s in "234")
    stem = shapes["conv1.0.weight"][0]
    got = (stem, *widths, conv5[0])
    if repeats != SHUFFLE_REPEATS:
        return []
    return [f"cifar_shufflenetv2_{t}" for t, w in SHUFFLE_WIDTHS.items() if w == got]


# ================================================================ registration

for _d in RESNET_DEPTHS:
    register_spec(_resnet_spec(_d))
for _d in VGG_CFGS:
    register_spec(_vgg_spec(_d))
for _wm in MNV2_WIDTHS:
    register_spec(_mnv2_spec(_wm))
for _t in SHUFFLE_WIDTHS:
    register_spec(_shuffle_spec(_t))


def _resnet_pattern(m: re.Match) -> ArchSpec | None:
    return _resnet_spec(int(m.group(1)), int(m.group(2) or 16))


def _mnv2_pattern(m: re.Match) -> ArchSpec | None:
    return _mnv2_spec(_wm_from_tag(m.group(1), m.group(2)))


def _hub_pattern(m: re.Match) -> ArchSpec | None:
    """The hub's entry-point names (``cifar100_resnet56``): same models, classes from the name."""
    classes, model, name = int(m.group(1)), m.group(2), m.group(0)
    if (r := re.fullmatch(r"resnet(\d+)", model)) is not None:
        return _resnet_spec(int(r.group(1)), num_classes=classes, name=name)
    if (r := re.fullmatch(r"vgg(\d+)_bn", model)) is not None:
        return _vgg_spec(int(r.group(1)), num_classes=classes, name=name)
    if (r := re.fullmatch(r"mobilenetv2_x(\d+)_(\d+)", model)) is not None:
        return _mnv2_spec(_wm_from_tag(r.group(1), r.group(2)), num_classes=classes, name=name)
    if (r := re.fullmatch(r"shufflenetv2_(x\d_\d)", model)) is not None:
        return _shuffle_spec(r.group(1), num_classes=classes, name=name)
    return None


register_arch_pattern(r"cifar_resnet(\d+)_b(?:_w(\d+))?", _resnet_pattern)
register_arch_pattern(r"cifar_mobilenetv2_x(\d+)_(\d+)", _mnv2_pattern)
register_arch_pattern(r"cifar(10|100)_(\w+)", _hub_pattern)

register_arch_inferrer(RESNET_FAMILY, _infer_resnet)
register_arch_inferrer(VGG_FAMILY, _infer_vgg)
register_arch_inferrer(MNV2_FAMILY, _infer_mnv2)
register_arch_inferrer(SHUFFLE_FAMILY, _infer_shuffle)
