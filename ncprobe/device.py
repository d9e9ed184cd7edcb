"""Choosing the torch device: CUDA when present, else CPU, unless the user names one."""

from __future__ import annotations

import torch

from .errors import NcprobeError


def resolve_device(name: str | None = None) -> torch.device:
    """Return the device to run on: ``name`` if given ('cpu', 'cuda', 'cuda:1', 'mps'), else the best available."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise NcprobeError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcprobeError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return dev
