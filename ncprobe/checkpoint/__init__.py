"""Reading checkpoints: any common file format, architecture inference against the model
registry, the registry of known public checkpoints, and the facts (classes, normalization,
probe points) the pipeline needs, as a :class:`LoadedCheckpoint`."""

from __future__ import annotations

from .loaded import LoadedCheckpoint
from .loader import load_checkpoint, parse_floats, parse_input_size

__all__ = ["LoadedCheckpoint", "load_checkpoint", "parse_floats", "parse_input_size"]
