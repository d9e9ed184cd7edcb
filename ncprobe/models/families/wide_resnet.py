"""Wide ResNets (Zagoruyko & Komodakis 2016), WRN-d-k for 32x32 inputs.

Depth d = 6n+4: 3x3 stem conv 3->16 (no bias); three groups layer1..layer3 of n pre-activation
blocks (BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3) with 16k/32k/64k channels and strides 1/2/2; a
1x1 conv ``shortcut`` on the block input where the shape changes; final BN ``bn1`` + ReLU, global
average pool, classifier ``linear``. This is the layout of the DDU benchmark's WRN-28-10 without
spectral normalization. ``wrn{d}_{k}`` names for any valid d and k are built on demand.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_arch, register_arch_inferrer, register_arch_pattern
from ..spec import ArchSpec
from ._parts import kaiming_init

FAMILY = "wide_resnet"
PROBE = ("layer1", "layer2", "layer3")
REGISTERED = ((16, 2), (16, 4), (16, 8), (28, 2), (28, 10), (40, 2), (40, 4))


class WideBasic(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, dropout: float = 0.3, in_channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or widen < 1:
            raise ValueError(f"WRN depth must be 6n+4 (n >= 1) and width >= 1, got {depth}-{widen}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._group(16, widths[0], n, 1, dropout)
        self.layer2 = self._group(widths[0], widths[1], n, 2, dropout)
        self.layer3 = self._group(widths[1], widths[2], n, 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(widths[2], num_classes)
        kaiming_init(self)

    @staticmethod
    def _group(in_planes: int, planes: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        layers = [WideBasic(in_planes, planes, stride, dropout)]
        layers += [WideBasic(planes, planes, 1, dropout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.linear(self.flatten(self.pool(out)))


def wide_resnet(depth: int, widen: int, num_classes: int = 10, **kwargs) -> WideResNet:
    """Generic WRN-depth-widen builder."""
    return WideResNet(depth=depth, widen=widen, num_classes=num_classes, **kwargs)


def _spec(depth: int, widen: int) -> ArchSpec:
    return ArchSpec(
        name=f"wrn{depth}_{widen}",
        builder=partial(wide_resnet, depth, widen),
        head="linear",
        probe_layers=PROBE,
        family=FAMILY,
        description=f"Wide ResNet WRN-{depth}-{widen} (pre-activation blocks, 1x1-conv shortcuts)",
    )


for _d, _k in REGISTERED:
    _s = _spec(_d, _k)
    register_arch(_s.name, head=_s.head, probe_layers=_s.probe_layers, family=FAMILY, description=_s.description)(
        _s.builder
    )


def _from_pattern(m: re.Match) -> ArchSpec | None:
    depth, widen = int(m.group(1)), int(m.group(2))
    if depth < 10 or (depth - 4) % 6 or widen < 1:
        return None
    return _spec(depth, widen)


register_arch_pattern(r"wrn(\d+)_(\d+)", _from_pattern)

_BLOCK = re.compile(r"layer([123])\.(\d+)\.")


def _infer(shapes: dict) -> list[str]:
    """n from the blocks per group, k from the first block's width."""
    counts: dict[str, set] = {}
    for key in shapes:
        m = _BLOCK.match(key)
        if m:
            counts.setdefault(m.group(1), set()).add(int(m.group(2)))
    first = shapes.get("layer1.0.conv1.weight")
    if "1" not in counts or first is None or first[0] % 16:
        return []
    n = max(len(v) for v in counts.values())
    return [f"wrn{6 * n + 4}_{first[0] // 16}"]


register_arch_inferrer(FAMILY, _infer)
