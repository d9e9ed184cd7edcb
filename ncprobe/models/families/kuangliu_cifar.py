"""Models of the widely copied ``kuangliu/pytorch-cifar`` training repository (32x32 inputs).

Its ResNet18/34/50/101/152 (``conv1``, ``bn1``, ``layer1..4``, ``shortcut.0/1``, ``linear``) are
the ``resnet{18..152}_cifar`` family of :mod:`.resnet_4stage` and are not repeated here. This
module adds, with that repository's module names so its checkpoints load with strict key
matching (every head is ``linear`` except VGG's ``classifier``):

* **PreActResNet** (He et al. 2016, "Identity mappings"): ``conv1`` 3x3 3->64 (no BN after it);
  ``layer1..4`` of pre-activation blocks ``bn1, conv1, bn2, conv2`` (basic; 18/34) or ``bn1, conv1
  (1x1), bn2, conv2 (3x3), bn3, conv3 (1x1)`` (bottleneck; 50/101/152) with 64/128/256/512 base
  channels and strides 1/2/2/2; where the shape changes the shortcut is ``shortcut.0``, a 1x1 conv
  of the pre-activated input (no BN); global average pool; ``linear``. kuangliu's network has no
  final BN; the copies used in adversarial-training repositories add one, ``bn`` (+ ReLU) before the
  pool: the ``..._bn`` names.
* **VGG-11/13/16/19** (always with BN): ``features`` conv3x3(bias)-BN-ReLU and 2x2 max-pools plus a
  parameter-free ``AvgPool2d(1)``; ``classifier`` one Linear 512 -> C.
* **MobileNetV2** (Sandler et al. 2018) in kuangliu's own layout: ``conv1``/``bn1`` 3->32 (stride
  1), ``layers.0..16`` blocks ``conv1/bn1`` (1x1 expand, also for t = 1), ``conv2/bn2`` (3x3
  depthwise), ``conv3/bn3`` (1x1 project) and, for stride-1 blocks whose width changes, a
  ``shortcut.0/1`` (1x1 conv + BN); ``conv2``/``bn2`` 320 -> 1280; ``linear``. Strides
  1,1,2,2,1,2,1 (32 -> 4).
* **DenseNet** (Huang et al. 2017) in kuangliu's layout: ``conv1`` 3x3 3->2k; ``dense1..4`` of
  bottlenecks ``bn1, conv1 (1x1, 4k), bn2, conv2 (3x3, k)`` that put the *new* features first
  (``cat([out, x])``); ``trans1..3`` = ``bn``, ``conv`` (1x1, compression 0.5), 2x2 average pool;
  ``bn``; ``linear``. DenseNet121/169/201 (k = 32), DenseNet161 (k = 48) and ``densenet_cifar``
  (k = 12, blocks 6-12-24-16); any other (k, blocks) as ``densenet_cifar_k{K}_{B1}_{B2}_{B3}_{B4}``.

kuangliu normalizes with mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010); the keys
do not say so, so the specs keep the defaults.
"""

from __future__ import annotations

import math
import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_arch_inferrer, register_arch_pattern, register_spec
from ..spec import ArchSpec
from ._parts import key_indices, make_stage, vgg_cfg_from_keys, vgg_pool_names

CIFAR = (3, 32, 32)








# ================================================================ PreActResNet

PREACT_FAMILY = "preact_resnet_cifar"
PREACT_PROBE = ("layer1", "layer2", "layer3", "layer4")


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + short


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + short


PREACT_CONFIGS = {
    18: (PreActBlock, (2, 2, 2, 2)),
    34: (PreActBlock, (3, 4, 6, 3)),
    50: (PreActBottleneck, (3, 4, 6, 3)),
    101: (PreActBottleneck, (3, 4, 23, 3)),
    152: (PreActBottleneck, (3, 8, 36, 3)),
}


class PreActResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes: int = 10, final_bn: bool = False, in_channels: int = 3):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._stage(block, 64, num_blocks[0], 1)
        self.layer2 = self._stage(block, 128, num_blocks[1], 2)
        self.layer3 = self._stage(block, 256, num_blocks[2], 2)
        self.layer4 = self._stage(block, 512, num_blocks[3], 2)
        self.bn = nn.BatchNorm2d(512 * block.expansion) if final_bn else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # = avg_pool2d(4) on 32x32 inputs
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage, self.in_planes = make_stage(block, self.in_planes, planes, blocks, stride)
        return stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def _build_preact(depth: int, final_bn: bool, num_classes: int = 10) -> PreActResNet:
    block, blocks = PREACT_CONFIGS[depth]
    return PreActResNet(block, blocks, num_classes=num_classes, final_bn=final_bn)


def _preact_name(depth: int, final_bn: bool) -> str:
    return f"preactresnet{depth}_cifar" + ("_bn" if final_bn else "")


_LAYER = re.compile(r"layer([1-4])\.(\d+)\.")


def _infer_preact(shapes: dict) -> list[str]:
    """Pre-activation: no stem BN, the first block's ``bn1`` sized like its input, conv-only shortcuts."""
    stem = shapes.get("conv1.weight")
    if stem is None or "linear.weight" not in shapes or "bn1.weight" in shapes or stem[0] != 64:
        return []
    if "layer1.0.bn1.weight" not in shapes or "layer2.0.shortcut.0.weight" not in shapes:
        return []
    if any(k.startswith("layer2.0.shortcut.1.") for k in shapes):
        return []  # a BN in the shortcut: post-activation ResNet (resnet*_cifar)
    counts = key_indices(shapes, _LAYER)
    blocks = tuple(len(counts.get(s, ())) for s in "1234")
    bottleneck = "layer1.0.conv3.weight" in shapes
    final_bn = "bn.weight" in shapes
    ranked = sorted(
        PREACT_CONFIGS,
        key=lambda d: ((PREACT_CONFIGS[d][0] is PreActBottleneck) != bottleneck,
                       sum(abs(a - b) for a, b in zip(PREACT_CONFIGS[d][1], blocks, strict=True))),
    )
    return [_preact_name(d, final_bn) for d in ranked[:2]]


# ================================================================ VGG

VGG_FAMILY = "vgg_cifar"
VGG_CFGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGGCifar(nn.Module):
    """conv3x3-BN-ReLU / max-pool ``features`` (+ a no-op AvgPool2d(1)), ``classifier`` Linear(512, C)."""

    def __init__(self, cfg, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))




def _infer_vgg(shapes: dict) -> list[str]:
    head = shapes.get("classifier.weight")
    if head is None or len(head) != 2:
        return []
    found = vgg_cfg_from_keys(shapes, kernel=None)
    if found is None or not found[1]:  # kuangliu's VGG always has BatchNorm
        return []
    return [f"vgg{d}_cifar" for d, c in VGG_CFGS.items() if c == found[0]]


# ================================================================ MobileNetV2 (kuangliu layout)

MNV2_FAMILY = "mobilenetv2_kuangliu"
# (expansion, out_planes, num_blocks, stride); strides of the first two changed for 32x32 inputs
MNV2_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MNV2_PROBE = ("layers.2", "layers.5", "layers.12", "layers.16")  # last block at 32, 16, 8 and 4 pixels


class MNV2Block(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 project; residual only at stride 1 (a 1x1 conv + BN if widths differ)."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 1:
            out = out + self.shortcut(x)
        return out


class MobileNetV2Cifar(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks, c = [], 32
        for expansion, out_planes, n, stride in MNV2_CFG:
            for s in [stride] + [1] * (n - 1):
                blocks.append(MNV2Block(c, out_planes, expansion, s))
                c = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(c, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # = avg_pool2d(4) on 32x32 inputs
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def _infer_mnv2(shapes: dict) -> list[str]:
    if "linear.weight" not in shapes or "layers.0.conv2.weight" not in shapes or "conv2.weight" not in shapes:
        return []
    dw = shapes["layers.0.conv2.weight"]
    return ["mobilenetv2_cifar"] if len(dw) == 4 and dw[1] == 1 else []


# ================================================================ DenseNet (kuangliu layout)

DENSE_FAMILY = "densenet_kuangliu"
DENSE_PROBE = ("dense1", "trans1", "dense2", "trans2", "dense3", "trans3", "dense4")
DENSE_NAMED = {
    "densenet121_cifar": (32, (6, 12, 24, 16)),
    "densenet169_cifar": (32, (6, 12, 32, 32)),
    "densenet201_cifar": (32, (6, 12, 48, 32)),
    "densenet161_cifar": (48, (6, 12, 36, 24)),
    "densenet_cifar": (12, (6, 12, 24, 16)),
}


class DenseBottleneck(nn.Module):
    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)  # new features first (this layout's order)


class DenseTransition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetCifar(nn.Module):
    def __init__(self, growth_rate: int = 32, nblocks=(6, 12, 24, 16), reduction: float = 0.5,
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        k = growth_rate
        planes = 2 * k
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        for i, n in enumerate(nblocks, start=1):
            layers = []
            for _ in range(n):
                layers.append(DenseBottleneck(planes, k))
                planes += k
            setattr(self, f"dense{i}", nn.Sequential(*layers))
            if i < len(nblocks):
                out = int(math.floor(planes * reduction))
                setattr(self, f"trans{i}", DenseTransition(planes, out))
                planes = out
        self.bn = nn.BatchNorm2d(planes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # = avg_pool2d(4) on 32x32 inputs
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = self.dense4(out)
        out = F.relu(self.bn(out))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def _build_dense(k: int, blocks: tuple, num_classes: int = 10) -> DenseNetCifar:
    return DenseNetCifar(growth_rate=k, nblocks=blocks, num_classes=num_classes)


def _dense_name(k: int, blocks: tuple) -> str:
    for name, cfg in DENSE_NAMED.items():
        if cfg == (k, tuple(blocks)):
            return name
    return f"densenet_cifar_k{k}_" + "_".join(str(b) for b in blocks)


def _dense_spec(k: int, blocks: tuple, name: str | None = None) -> ArchSpec | None:
    if k < 1 or len(blocks) != 4 or min(blocks) < 1:
        return None
    depth = 2 * sum(blocks) + 5
    return ArchSpec(
        name=name or _dense_name(k, blocks),
        builder=partial(_build_dense, k, tuple(blocks)),
        head="linear",
        probe_layers=DENSE_PROBE,
        input_size=CIFAR,
        family=DENSE_FAMILY,
        description=f"DenseNet-{depth} (k={k}, blocks {'-'.join(map(str, blocks))}) for 32x32 inputs "
        "(kuangliu/pytorch-cifar layout: dense1..4, trans1..3, bn, linear)",
    )


_DENSE = re.compile(r"dense([1-4])\.(\d+)\.")


def _infer_dense(shapes: dict) -> list[str]:
    """Growth rate from the first layer's 3x3 conv, blocks from the key counts."""
    conv = shapes.get("dense1.0.conv2.weight")
    stem = shapes.get("conv1.weight")
    if conv is None or stem is None or "linear.weight" not in shapes or "trans1.conv.weight" not in shapes:
        return []
    k = conv[0]
    if stem[0] != 2 * k:
        return []
    counts = key_indices(shapes, _DENSE)
    blocks = tuple(len(counts.get(s, ())) for s in "1234")
    if min(blocks) < 1:
        return []
    return [_dense_name(k, blocks)]


# ================================================================ registration

for _d in PREACT_CONFIGS:
    for _bn in (False, True):
        register_spec(ArchSpec(
            name=_preact_name(_d, _bn),
            builder=partial(_build_preact, _d, _bn),
            head="linear",
            probe_layers=PREACT_PROBE,
            input_size=CIFAR,
            family=PREACT_FAMILY,
            description=f"PreActResNet-{_d} for 32x32 inputs (kuangliu/pytorch-cifar layout"
            + (", plus a final BN 'bn' as in adversarial-training copies)" if _bn else ", no final BN)"),
        ))

for _d, _cfg in VGG_CFGS.items():
    register_spec(ArchSpec(
        name=f"vgg{_d}_cifar",
        builder=partial(lambda cfg, num_classes=10: VGGCifar(cfg, num_classes=num_classes), _cfg),
        head="classifier",
        probe_layers=vgg_pool_names(_cfg),
        input_size=CIFAR,
        family=VGG_FAMILY,
        description=f"VGG-{_d} with BN for 32x32 inputs, one Linear classifier (kuangliu/pytorch-cifar layout)",
    ))

register_spec(ArchSpec(
    name="mobilenetv2_cifar",
    builder=lambda num_classes=10: MobileNetV2Cifar(num_classes=num_classes),
    head="linear",
    probe_layers=MNV2_PROBE,
    input_size=CIFAR,
    family=MNV2_FAMILY,
    description="MobileNetV2 for 32x32 inputs in the kuangliu/pytorch-cifar layout (layers.N.conv1..3, linear)",
))

for _name, (_k, _blocks) in DENSE_NAMED.items():
    register_spec(_dense_spec(_k, _blocks, name=_name))


def _dense_pattern(m: re.Match) -> ArchSpec | None:
    k, blocks = int(m.group(1)), tuple(int(m.group(i)) for i in range(2, 6))
    return _dense_spec(k, blocks, name=m.group(0))


register_arch_pattern(r"densenet_cifar_k(\d+)_(\d+)_(\d+)_(\d+)_(\d+)", _dense_pattern)

register_arch_inferrer(PREACT_FAMILY, _infer_preact)
register_arch_inferrer(VGG_FAMILY, _infer_vgg)
register_arch_inferrer(MNV2_FAMILY, _infer_mnv2)
register_arch_inferrer(DENSE_FAMILY, _infer_dense)
