"""Loading checkpoints: any common file format, architecture inference, the registry of known
public checkpoints, and the facts (classes, normalization, probe points) the pipeline needs."""

from __future__ import annotations

from .archs import ArchSpec, create_model, get_arch, list_archs, register_arch
from .loader import load_checkpoint, parse_floats, parse_input_size
from .types import IMAGENET_MEAN, IMAGENET_STD, LoadedCheckpoint

__all__ = [
    "ArchSpec",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedCheckpoint",
    "create_model",
    "get_arch",
    "list_archs",
    "load_checkpoint",
    "parse_floats",
    "parse_input_size",
    "register_arch",
]
