"""What a network is, seen from outside: :class:`ArchSpec` and the normalization constants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: the standard input normalizations, the candidates of calibration: name -> (mean, std)
NORMALIZATIONS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar10-kuangliu": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "0.5/0.5": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

#: bounds on what a checkpoint file may ask ncprobe to build (checked before any allocation)
MAX_CLASSES = 100_000
MAX_INPUT_CHANNELS = 16
MAX_INPUT_SIDE = 1024  # image classifiers run at <= 518 px; 1024 leaves room
DEFAULT_MAX_PARAMETERS = 2_000_000_000  # NCPROBE_MAX_PARAMS overrides it


def max_parameters() -> int:
    """The largest parameter count ncprobe builds (``$NCPROBE_MAX_PARAMS``, default 2e9: 8 GB in float32)."""
    import os

    from ..errors import NcprobeError

    raw = os.environ.get("NCPROBE_MAX_PARAMS")
    if raw is None:
        return DEFAULT_MAX_PARAMETERS
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise NcprobeError(f"NCPROBE_MAX_PARAMS={raw!r} is not a positive number of parameters; e.g. 2e9, or unset it")
    return value


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

