"""Runs spread over several processes with torch.distributed (``torchrun --nproc_per_node=K -m ncprobe ...``).

The launcher's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
turns it on. Each rank extracts its share of every data set's batches on its own device (rank r
takes batches r, r + K, r + 2K, ..., so each batch holds the same images as in one process and the
features are the same numbers); the features and the per-rank class statistics are gathered on
rank 0, which merges the statistics exactly (Chan et al.'s pairwise update) and alone scores,
writes the cache and the CSVs and prints. The backend is NCCL when every rank has a GPU, gloo
otherwise (the CPU tests use gloo).

A rank that dies stops the run: the launcher stops the others, each of which says so in one line,
and nothing is written, since rank 0 writes only after every rank's features have arrived.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass

import numpy as np

from .errors import NcprobeError


class DistributedError(NcprobeError):
    """The ranks of a distributed run lost each other (a rank died, a timeout)."""


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` (``size == 1``: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_WORLD = World()


def world() -> World:
    """The current :class:`World` (one process unless :func:`init_from_env` joined a group)."""
    return _WORLD


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise NcprobeError(f"the launcher's {name}={text!r} is not a whole number; start ncprobe with torchrun") from None


def timeout_seconds() -> float:
    """How long a rank waits for the others (``NCPROBE_DIST_TIMEOUT`` seconds, default 1800)."""
    text = os.environ.get("NCPROBE_DIST_TIMEOUT", "1800")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise NcprobeError(f"NCPROBE_DIST_TIMEOUT={text!r} must be a positive number of seconds")
    return value


def init_from_env() -> World:
    """Join the process group the launcher describes (no-op without ``WORLD_SIZE`` > 1)."""
    global _WORLD
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return _WORLD
    import torch
    import torch.distributed as dist

    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available() and torch.cuda.device_count() > local
    if cuda:
        torch.cuda.set_device(local)  # "cuda" on this rank means its own GPU
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_seconds()))
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"rank {rank} could not join the {backend} process group "
                                   f"({' '.join(str(exc).split())[:200]}); start ncprobe with torchrun") from None
    _WORLD = World(rank=rank, size=size, local_rank=local)
    return _WORLD


def _collective(what: str, fn, *args):
    try:
        return fn(*args)
    except RuntimeError as exc:  # gloo/NCCL errors (DistBackendError is one) when a peer is gone
        raise DistributedError(f"rank {_WORLD.rank} lost contact with the other ranks while {what} ({_reason(exc)}); "
                               "another rank failed or was killed: see its error. Nothing of this run was written") from None


def _reason(exc: BaseException) -> str:
    """The first sentence of a backend error, without its source-location prefix."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return (text.split(". ")[0] or type(exc).__name__)[:100]


def gather_to_main(obj, what: str = "gathering features"):
    """Every rank's ``obj`` in rank order on rank 0 (None on the other ranks)."""
    if not _WORLD.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * _WORLD.size if _WORLD.is_main else None
    _collective(what, dist.gather_object, obj, out, 0)
    return out


def all_gather(obj, what: str = "sharing state"):
    """Every rank's ``obj`` in rank order, on every rank."""
    if not _WORLD.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * _WORLD.size
    _collective(what, dist.all_gather_object, out, obj)
    return out


def broadcast_from_main(obj, what: str = "sharing the plan"):
    """Rank 0's ``obj`` on every rank."""
    if not _WORLD.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    _collective(what, dist.broadcast_object_list, box, 0)
    return box[0]


def shard_rows(n: int, batch_size: int, rank: int, size: int) -> np.ndarray:
    """The rows of a set of ``n`` that rank ``rank`` of ``size`` extracts: whole batches
    b = rank, rank + size, ... of ``batch_size`` rows, so each batch is the one a single process
    would run (and gives the same numbers)."""
    starts = np.arange(0, n, batch_size)[rank::size]
    if starts.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, min(s + batch_size, n)) for s in starts]).astype(np.int64)
