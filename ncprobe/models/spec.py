"""What a network is, seen from outside: :class:`ArchSpec` and the normalization constants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    # extra keys understood by the loader:
    #   key_aliases: {"fc.": "linear."} -- checkpoint key prefixes renamed before matching
    #   accepts_num_classes: False -- the builder ignores num_classes (user classes)
    #   defaults_origin: origin of input_size/mean/std ('default' unless said otherwise)

