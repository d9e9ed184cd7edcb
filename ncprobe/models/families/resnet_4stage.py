"""ImageNet-depth ResNets adapted to 32x32 inputs (the common CIFAR ResNet18/34/50 of OOD papers).

3x3 stem conv 3->64 (stride 1, no bias) + BN + ReLU and no max-pool; four stages layer1..layer4
of basic (18/34) or bottleneck (50/101/152) blocks with 64/128/256/512 base channels and strides
1/2/2/2; projection shortcuts ``shortcut.0`` (1x1 conv) + ``shortcut.1`` (BN) where the shape
changes; global average pool; classifier ``linear``. Key names follow the widely used public
CIFAR ResNets; checkpoints that call the classifier ``fc`` load too (``fc.`` is renamed).
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_arch, register_arch_inferrer
from ._parts import make_stage

FAMILY = "resnet_cifar"
PROBE = ("layer1", "layer2", "layer3", "layer4")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()  # identity, no parameters
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class ResNetCifar(nn.Module):
    def __init__(self, block, num_blocks, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(block, 64, num_blocks[0], 1)
        self.layer2 = self._stage(block, 128, num_blocks[1], 2)
        self.layer3 = self._stage(block, 256, num_blocks[2], 2)
        self.layer4 = self._stage(block, 512, num_blocks[3], 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage, self.in_planes = make_stage(block, self.in_planes, planes, blocks, stride)
        return stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.flatten(self.pool(out)))


CONFIGS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _build(depth: int, num_classes: int = 10) -> ResNetCifar:
    block, blocks = CONFIGS[depth]
    return ResNetCifar(block, blocks, num_classes=num_classes)


for _depth, (_block, _blocks) in CONFIGS.items():
    register_arch(
        f"resnet{_depth}_cifar",
        head="linear",
        probe_layers=PROBE,
        family=FAMILY,
        description=f"ResNet-{_depth} for 32x32 inputs (3x3 stem, no max-pool, {_block.__name__.lower()} blocks)",
        extra={"key_aliases": {"fc.": "linear."}},
    )(partial(_build, _depth))

_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.")


def _infer(shapes: dict) -> list[str]:
    """Depth from the blocks per stage and the block type (conv3 present = bottleneck)."""
    counts = [set(), set(), set(), set()]
    bottleneck = False
    for key in shapes:
        m = _BLOCK.match(key)
        if m:
            counts[int(m.group(1)) - 1].add(int(m.group(2)))
            bottleneck |= key.endswith(".conv3.weight")
    blocks = tuple(len(c) for c in counts)
    if not blocks[0] or not blocks[3]:
        return []
    ranked = sorted(
        CONFIGS,
        key=lambda d: (
            (CONFIGS[d][0] is Bottleneck) != bottleneck,
            sum(abs(a - b) for a, b in zip(CONFIGS[d][1], blocks, strict=True)),
        ),
    )
    return [f"resnet{d}_cifar" for d in ranked[:2]]


register_arch_inferrer(FAMILY, _infer)
