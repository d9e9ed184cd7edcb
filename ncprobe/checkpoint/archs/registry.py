"""A name -> architecture registry, in the manner of timm's ``register_model``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ...errors import CheckpointError
from ..types import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and what it looks like from outside."""

    name: str
    builder: Callable[..., nn.Module]  # builder(num_classes=...) -> nn.Module
    head: str  # dotted path of the classifier module
    probe_layers: tuple[str, ...]  # default probe points (block groups), stem to head
    input_size: tuple[int, int, int] = (3, 32, 32)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    family: str = ""
    description: str = ""
    default_num_classes: int = 10
    extra: dict = field(default_factory=dict)


_ARCHS: dict[str, ArchSpec] = {}


def register_arch(name: str, *, head: str, probe_layers, **kwargs):
    """Decorator: register ``fn(num_classes=...) -> nn.Module`` under ``name``."""

    def deco(fn):
        if name in _ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        _ARCHS[name] = ArchSpec(name=name, builder=fn, head=head, probe_layers=tuple(probe_layers), **kwargs)
        return fn

    return deco


def get_arch(name: str) -> ArchSpec:
    if name not in _ARCHS:
        known = ", ".join(sorted(_ARCHS))
        raise CheckpointError(f"unknown architecture {name!r}; known: {known}, or timm:NAME, or path.py:Class")
    return _ARCHS[name]


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    spec = get_arch(name)
    return spec.builder(num_classes=num_classes or spec.default_num_classes, **kwargs)
