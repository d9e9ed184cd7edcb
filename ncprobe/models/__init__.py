"""What a network is: the architecture spec and registry (with ``timm:NAME`` and ``file.py:Class``
support), the registered families, the neural-collapse control heads and the ncprobe checkpoint
format. Nothing here reads a user's checkpoint file; :mod:`ncprobe.checkpoint` does that."""

from __future__ import annotations

from . import families  # noqa: F401 - registers every family
from .registry import (
    create_model,
    family_inferrers,
    get_arch,
    list_archs,
    register_arch,
    register_arch_inferrer,
    register_arch_pattern,
)
from .spec import IMAGENET_MEAN, IMAGENET_STD, ArchSpec

__all__ = [
    "ArchSpec",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "create_model",
    "family_inferrers",
    "get_arch",
    "list_archs",
    "register_arch",
    "register_arch_inferrer",
    "register_arch_pattern",
]
