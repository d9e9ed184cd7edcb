"""The CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", section 4.2).

3x3 stem conv 3->16 (no bias) + BN + ReLU, no max-pool; three stages of n basic blocks with
16/32/64 channels and strides 1/2/2 (depth 6n+2); parameter-free "option A" shortcuts (stride-2
subsampling ``x[:, :, ::2, ::2]`` zero-padded on channels, half the new channels on each side);
global average pool; classifier ``linear`` 64 -> C. Module names (conv1, bn1, layer1..3 with
blocks conv1/bn1/conv2/bn2, linear) follow the widely used public checkpoints, so those load with
strict key matching.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_arch, register_arch_inferrer, register_arch_pattern
from ..spec import ArchSpec

FAMILY = "cifar_resnet"
DEPTHS = (20, 32, 44, 56, 110, 1202)
PROBE = ("layer1", "layer2", "layer3")


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` and zero-pad channels evenly on both sides."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad_before = (out_planes - in_planes) // 2
        self.pad_after = out_planes - in_planes - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet of depth 6n+2."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.flatten(self.pool(out)))


def _build(depth: int, num_classes: int = 10) -> CifarResNet:
    return CifarResNet(depth=depth, num_classes=num_classes)


def _spec(depth: int) -> ArchSpec:
    return ArchSpec(
        name=f"cifar_resnet{depth}",
        builder=partial(_build, depth),
        head="linear",
        probe_layers=PROBE,
        family=FAMILY,
        description=f"He et al. 2016 CIFAR ResNet-{depth} (option-A shortcuts, 16/32/64 channels)",
    )


for _d in DEPTHS:
    _s = _spec(_d)
    register_arch(_s.name, head=_s.head, probe_layers=_s.probe_layers, family=FAMILY, description=_s.description)(
        _s.builder
    )


def _from_pattern(m: re.Match) -> ArchSpec | None:
    depth = int(m.group(1))
    if depth < 8 or (depth - 2) % 6:
        return None
    return _spec(depth)


register_arch_pattern(r"cifar_resnet(\d+)", _from_pattern)

_BLOCK = re.compile(r"layer([123])\.(\d+)\.")


def _infer(shapes: dict) -> list[str]:
    """Depth from the number of blocks per stage (all three stages have n blocks)."""
    counts = {}
    for key in shapes:
        m = _BLOCK.match(key)
        if m:
            counts.setdefault(m.group(1), set()).add(int(m.group(2)))
    if "1" not in counts:
        return []
    n = max(len(v) for v in counts.values())
    if shapes.get("conv1.weight", (None,))[0] not in (None, 16):
        return []  # a different stem width: not this family
    return [f"cifar_resnet{6 * n + 2}"]


register_arch_inferrer(FAMILY, _infer)
