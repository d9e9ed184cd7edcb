"""Wide ResNets (Zagoruyko & Komodakis 2016) in the layout of the OOD-detection checkpoints.

This is the key layout of the WRN code that Outlier Exposure (Hendrycks et al. 2019), the energy
score (Liu et al. 2020) and many later OOD papers ship their CIFAR WRN-40-2 weights with (the same
layout as the original public PyTorch port of WRN, and as RobustBench's WRN-28-10/34-10):

``conv1`` 3x3 3->16 (no bias); ``block1``/``block2``/``block3``, each a ``layer`` Sequential of n
pre-activation blocks ``bn1, relu1, conv1 (3x3, stride), bn2, relu2, conv2 (3x3)`` with 16k/32k/64k
channels and strides 1/2/2 (depth d = 6n+4, widen factor k); where the width changes the shortcut is
``convShortcut``, a 1x1 conv applied to the block's *pre-activated* input relu1(bn1(x)) (unlike the
DDU-layout ``wrn{d}_{k}`` family, whose shortcut takes the raw input); final ``bn1`` + ReLU, global
average pool, ``fc`` 64k -> C. With k = 1 the first group keeps 16 channels and has no
``convShortcut``. Dropout between the convs (``dropRate``) has no weights and is off in eval.

Names ``wrn{d}_{k}_oe``: ``wrn40_2_oe`` (the standard CIFAR OOD checkpoint), ``wrn16_2_oe``, ... and a
pattern for any valid d, k. The inferrer reads n from the number of blocks in ``block1.layer`` and
k from the width of the first block. OE normalizes inputs with mean (125.3, 123.0, 113.9)/255 and
std (63.0, 62.1, 66.7)/255; the keys do not say so, so the specs keep the defaults.
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

FAMILY = "wrn_oe"
PROBE = ("block1", "block2", "block3")
REGISTERED = ((16, 2), (16, 4), (16, 8), (22, 2), (28, 2), (28, 10), (34, 10), (40, 1), (40, 2), (40, 4))


class OEBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3; shortcut identity or 1x1 conv of relu1(bn1(x))."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.convShortcut = None  # noqa: N815 - the public key name
        if in_planes != out_planes or stride != 1:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        if self.convShortcut is None:
            return x + out
        return self.convShortcut(pre) + out


class NetworkBlock(nn.Module):
    """One group of n blocks, held as ``layer`` (the public key prefix ``blockK.layer.N``)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        blocks = [OEBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                  for i in range(n)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNetOE(nn.Module):
    def __init__(self, depth: int = 40, widen_factor: int = 2, num_classes: int = 10, drop_rate: float = 0.0,
                 in_channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or widen_factor < 1:
            raise ValueError(f"WRN depth must be 6n+4 (n >= 1) and widen factor >= 1, got {depth}-{widen_factor}")
        n = (depth - 4) // 6
        ch = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # = avg_pool2d(8) on 32x32 inputs
        self.fc = nn.Linear(ch[3], num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def wide_resnet_oe(depth: int, widen_factor: int, num_classes: int = 10, **kwargs) -> WideResNetOE:
    return WideResNetOE(depth=depth, widen_factor=widen_factor, num_classes=num_classes, **kwargs)


def _spec(depth: int, widen: int) -> ArchSpec | None:
    if depth < 10 or (depth - 4) % 6 or widen < 1:
        return None
    return ArchSpec(
        name=f"wrn{depth}_{widen}_oe",
        builder=partial(wide_resnet_oe, depth, widen),
        head="fc",
        probe_layers=PROBE,
        input_size=(3, 32, 32),
        family=FAMILY,
        description=f"Wide ResNet WRN-{depth}-{widen} in the Outlier-Exposure/energy layout "
        "(blockK.layer.N, convShortcut on the pre-activated input, head fc)",
    )


for _d, _k in REGISTERED:
    _s = _spec(_d, _k)
    register_arch(_s.name, head=_s.head, probe_layers=_s.probe_layers, input_size=_s.input_size, family=FAMILY,
                  description=_s.description)(_s.builder)

register_arch_pattern(r"wrn(\d+)_(\d+)_oe", lambda m: _spec(int(m.group(1)), int(m.group(2))))

_BLOCK = re.compile(r"block([1-9])\.layer\.(\d+)\.")


def _infer(shapes: dict) -> list[str]:
    """n from the blocks per group, k from the first block's output width over the stem's 16."""
    try:
        first = shapes.get("block1.layer.0.conv1.weight")
        stem = shapes.get("conv1.weight")
        if first is None or stem is None or "fc.weight" not in shapes or stem[0] != 16:
            return []
        counts: dict[str, set] = {}
        for key in shapes:
            m = _BLOCK.match(key)
            if m:
                counts.setdefault(m.group(1), set()).add(int(m.group(2)))
        if set(counts) != {"1", "2", "3"} or first[0] % 16:
            return []
        n = max(len(v) for v in counts.values())
        return [f"wrn{6 * n + 4}_{first[0] // 16}_oe"]
    except Exception:  # noqa: BLE001 - an inferrer never raises
        return []


register_arch_inferrer(FAMILY, _infer)
