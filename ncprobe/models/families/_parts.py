"""Pieces shared by the architecture families: reading a state_dict's key layout (block indices,
a VGG's conv configuration), naming VGG's pooling stages, building a stage of residual blocks, and the common weight initialization."""

from __future__ import annotations

import re

from torch import nn


def key_indices(shapes: dict, regex: re.Pattern) -> dict[str, set[int]]:
    """``{group(1): {int(group(2)), ...}}`` over the keys that ``regex`` matches at their start, e.g.
    the block indices of each stage from ``layer(\\d)\\.(\\d+)\\.``."""
    out: dict[str, set[int]] = {}
    for key in shapes:
        m = regex.match(key)
        if m:
            out.setdefault(m.group(1), set()).add(int(m.group(2)))
    return out


def vgg_cfg_from_keys(shapes: dict, prefix: str = "features.", kernel: tuple | None = (3, 3)) -> tuple[tuple, bool] | None:
    """(cfg, batch_norm) read back from the conv/BN indices of a ``features`` Sequential.

    Convs are the 4-D ``weight``s; a BN follows a conv when ``{i+1}.running_mean`` exists; a gap of
    one index more than conv(-BN)-ReLU between two convs is a max-pool. The pool after the last conv
    leaves no key, so the last 'M' is assumed (every VGG ends with one). ``kernel``: the spatial
    size every conv must have (None: any).
    """
    convs = {}
    pat = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    for key, shape in shapes.items():
        m = pat.match(key)
        if m and len(shape) == 4:
            convs[int(m.group(1))] = shape
    if not convs:
        return None
    idx = sorted(convs)
    bn = f"{prefix}{idx[0] + 1}.running_mean" in shapes
    step = 3 if bn else 2
    if idx[0] != 0:
        return None
    cfg: list = []
    for j, i in enumerate(idx):
        if kernel is not None and tuple(convs[i][2:]) != tuple(kernel):
            return None
        cfg.append(convs[i][0])
        if j + 1 < len(idx):
            gap = idx[j + 1] - i
            if gap == step + 1:
                cfg.append("M")
            elif gap != step:
                return None
    cfg.append("M")
    return tuple(cfg), bn


def vgg_pool_names(cfg, batch_norm: bool = True, prefix: str = "features.") -> tuple[str, ...]:
    """Names of the max-pools inside a VGG ``features`` Sequential built from ``cfg`` (channel counts
    and "M" for a pool; each conv is conv + [BN] + ReLU): where the spatial size halves."""
    names, i = [], 0
    for v in cfg:
        if v == "M":
            names.append(f"{prefix}{i}")
            i += 1
        else:
            i += 3 if batch_norm else 2
    return tuple(names)


def make_stage(block, in_planes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    """``blocks`` residual blocks, the first with ``stride``; returns the stage and its output width
    (``planes * block.expansion``)."""
    layers = []
    for s in [stride] + [1] * (blocks - 1):
        layers.append(block(in_planes, planes, s))
        in_planes = planes * block.expansion
    return nn.Sequential(*layers), in_planes


def kaiming_init(model: nn.Module) -> None:
    """He (fan-out, ReLU) initialization of every conv and zero bias of every Linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
