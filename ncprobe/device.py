"""Choosing the torch device: CUDA when present, else CPU, unless the user names one."""

from __future__ import annotations

import torch

from .errors import NcprobeError

SUPPORTED = ("cpu", "cuda", "mps")


def resolve_device(name: str | None = None) -> torch.device:
    """Return the device to run on: ``name`` if given ('cpu', 'cuda', 'cuda:1', 'mps'), else the best available.

    Devices ncprobe does not run on (``meta`` computes nothing, ``xla``/``xpu``/... are untested) and
    devices this machine lacks are refused in one line.
    """
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(str(name))
    except (RuntimeError, ValueError, TypeError):
        raise NcprobeError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type not in SUPPORTED:
        raise NcprobeError(f"device {name!r} is not one ncprobe runs on; use cpu, cuda, cuda:N, mps or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NcprobeError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NcprobeError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                               "use cuda:0 .. cuda:N-1")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NcprobeError(f"device {name!r} asked for but MPS is not available here; use --device cpu")
    return dev
