"""DenseNets for CIFAR (Huang et al. 2017, section 3 "Implementation details"): DenseNet-BC
(k = 12, depth 100 and 40, ...) and the plain DenseNet-40/100.

The key layout is the public PyTorch DenseNet of the CIFAR OOD literature (the ``DenseNet3`` that
ODIN, Mahalanobis, ReAct, DICE, KNN and ASH ship their DenseNet-100/"DenseNet-101" weights with):

``conv1`` 3x3 3->2k (no bias); three dense blocks ``block1..3``, each a ``layer`` Sequential of n
layers; a bottleneck layer (B) is ``bn1, relu, conv1 (1x1 -> 4k), bn2, conv2 (3x3 -> k)``, a basic
layer ``bn1, relu, conv1 (3x3 -> k)``; each layer appends its k new maps *after* its input
(``cat([x, out])``); transitions ``trans1``, ``trans2`` = ``bn1, relu, conv1`` (1x1, to
floor(c * reduction) channels; C = compression 0.5) + 2x2 average pool; final ``bn1`` + ReLU,
global average pool (8x8 on 32x32 inputs), ``fc``. Depth d: n = (d - 4) / 6 with bottlenecks,
(d - 4) / 3 without.

The other common public CIFAR DenseNet (the ``pytorch-classification`` one: ``dense1..3.N``
layers, ``trans1..2``, top-level ``bn``, ``fc``) has the same computation and per-layer names, so
its files load too: ``dense{i}.`` is renamed ``block{i}.layer.`` and ``bn.`` ``bn1.`` (key aliases).
The torchvision-style layout (``features.denseblockN.denselayerM``) is not covered here.

Names: ``densenet{d}{_bc|_b|_c}_k{k}[_s{w}]`` -- ``_b`` bottlenecks, ``_c`` compression 0.5,
``_s{w}`` a stem of w channels instead of 2k (the paper's plain DenseNets use 16: Huang et al. report
1.0 M / 7.0 M / 27.2 M parameters for DenseNet-40/100 k=12 and DenseNet-100 k=24 with it), e.g.
``densenet100_bc_k12``, ``densenet40_bc_k12``, ``densenet40_k12`` (plain, stem 2k),
``densenet100_k24_s16``; any valid d, k, w via a pattern. The inferrer reads k from the first
layer's output, n from the layer counts, B from the presence of ``conv2``, the compression from the
first transition's shape and the stem width from ``conv1``.
"""

from __future__ import annotations

import math
import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_arch, register_arch_inferrer, register_arch_pattern
from ..spec import ArchSpec
from ._parts import kaiming_init

FAMILY = "densenet_bc"
PROBE = ("block1", "trans1", "block2", "trans2", "block3")
REGISTERED = ((40, True, True, 12), (100, True, True, 12), (190, True, True, 40), (250, True, True, 24),
              (40, False, False, 12), (100, False, False, 12), (100, False, False, 24),
              (40, False, False, 12, 16), (100, False, False, 12, 16), (100, False, False, 24, 16))
ALIASES = {"dense1.": "block1.layer.", "dense2.": "block2.layer.", "dense3.": "block3.layer.", "bn.": "bn1."}


class BottleneckLayer(nn.Module):
    def __init__(self, in_planes: int, growth: int, drop_rate: float = 0.0):
        super().__init__()
        inter = 4 * growth
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, inter, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(self.relu(self.bn2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return torch.cat([x, out], 1)


class BasicLayer(nn.Module):
    def __init__(self, in_planes: int, growth: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, growth, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(self.relu(self.bn1(x))), 2)


class DenseBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, growth: int, bottleneck: bool, drop_rate: float = 0.0):
        super().__init__()
        layer = BottleneckLayer if bottleneck else BasicLayer
        self.layer = nn.Sequential(*[layer(in_planes + i * growth, growth, drop_rate) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class DenseNetBC(nn.Module):
    def __init__(self, depth: int = 100, growth_rate: int = 12, bottleneck: bool = True, reduction: float = 0.5,
                 num_classes: int = 10, drop_rate: float = 0.0, stem: int | None = None, in_channels: int = 3):
        super().__init__()
        n = _layers_per_block(depth, bottleneck)
        if n is None or growth_rate < 1 or not 0 < reduction <= 1:
            raise ValueError(f"DenseNet depth {depth} does not fit {'bottleneck' if bottleneck else 'basic'} layers")
        k = growth_rate
        c = stem or 2 * k
        self.conv1 = nn.Conv2d(in_channels, c, 3, stride=1, padding=1, bias=False)
        self.block1 = DenseBlock(n, c, k, bottleneck, drop_rate)
        c += n * k
        self.trans1 = Transition(c, int(math.floor(c * reduction)))
        c = int(math.floor(c * reduction))
        self.block2 = DenseBlock(n, c, k, bottleneck, drop_rate)
        c += n * k
        self.trans2 = Transition(c, int(math.floor(c * reduction)))
        c = int(math.floor(c * reduction))
        self.block3 = DenseBlock(n, c, k, bottleneck, drop_rate)
        c += n * k
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # = avg_pool2d(8) on 32x32 inputs
        self.fc = nn.Linear(c, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.trans1(self.block1(out))
        out = self.trans2(self.block2(out))
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def _layers_per_block(depth: int, bottleneck: bool) -> int | None:
    per = 6 if bottleneck else 3
    if depth < 4 + per or (depth - 4) % per:
        return None
    return (depth - 4) // per


def densenet_bc(depth: int, growth_rate: int, bottleneck: bool, compression: bool, stem: int | None = None,
                num_classes: int = 10, **kwargs) -> DenseNetBC:
    return DenseNetBC(depth=depth, growth_rate=growth_rate, bottleneck=bottleneck,
                      reduction=0.5 if compression else 1.0, num_classes=num_classes, stem=stem, **kwargs)


def _name(depth: int, bottleneck: bool, compression: bool, k: int, stem: int | None = None) -> str:
    tag = ("b" if bottleneck else "") + ("c" if compression else "")
    suffix = f"_s{stem}" if stem and stem != 2 * k else ""
    return f"densenet{depth}" + (f"_{tag}" if tag else "") + f"_k{k}{suffix}"


def _spec(depth: int, bottleneck: bool, compression: bool, k: int, stem: int | None = None) -> ArchSpec | None:
    if _layers_per_block(depth, bottleneck) is None or k < 1 or (stem is not None and stem < 1):
        return None
    stem = None if stem == 2 * k else stem
    kind = {(True, True): "DenseNet-BC", (True, False): "DenseNet-B", (False, True): "DenseNet-C",
            (False, False): "DenseNet"}[(bottleneck, compression)]
    return ArchSpec(
        name=_name(depth, bottleneck, compression, k, stem),
        builder=partial(densenet_bc, depth, k, bottleneck, compression, stem),
        head="fc",
        probe_layers=PROBE,
        input_size=(3, 32, 32),
        family=FAMILY,
        description=f"{kind}-{depth} (k={k}, stem {stem or 2 * k}) for 32x32 inputs (blockN.layer.M, transN, "
        "bn1, fc; dense{N}./bn. keys renamed)",
        extra={"key_aliases": dict(ALIASES)},
    )


for _args in REGISTERED:
    _s = _spec(*_args)
    register_arch(_s.name, head=_s.head, probe_layers=_s.probe_layers, input_size=_s.input_size, family=FAMILY,
                  description=_s.description, extra=_s.extra)(_s.builder)


def _from_pattern(m: re.Match) -> ArchSpec | None:
    tag = m.group(2) or ""
    stem = int(m.group(4)) if m.group(4) else None
    return _spec(int(m.group(1)), "b" in tag, "c" in tag, int(m.group(3)), stem)


register_arch_pattern(r"densenet(\d+)(?:_(bc|b|c))?_k(\d+)(?:_s(\d+))?", _from_pattern)

_LAYER = re.compile(r"(?:block([1-3])\.layer|dense([1-3]))\.(\d+)\.")


def _infer(shapes: dict) -> list[str]:
    """k, n, bottleneck and compression from the shapes, in either key layout."""
    try:
        if "fc.weight" not in shapes or "conv1.weight" not in shapes:
            return []
        first = next((p for p in ("block1.layer.0.", "dense1.0.") if f"{p}conv1.weight" in shapes), None)
        trans = shapes.get("trans1.conv1.weight")
        if first is None or trans is None:
            return []
        bottleneck = f"{first}conv2.weight" in shapes
        k = shapes[f"{first}conv2.weight" if bottleneck else f"{first}conv1.weight"][0]
        counts: dict[str, set] = {}
        for key in shapes:
            m = _LAYER.match(key)
            if m:
                counts.setdefault(m.group(1) or m.group(2), set()).add(int(m.group(3)))
        if set(counts) != {"1", "2", "3"}:
            return []
        n = max(len(v) for v in counts.values())
        depth = 4 + (6 if bottleneck else 3) * n
        compression = trans[0] < trans[1]
        return [_name(depth, bottleneck, compression, k, shapes["conv1.weight"][0])]
    except Exception:  # noqa: BLE001 - an inferrer never raises
        return []


register_arch_inferrer(FAMILY, _infer)
