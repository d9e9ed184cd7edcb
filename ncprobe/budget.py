"""The memory budget: how many bytes one fit may allocate before ncprobe refuses it.

Scorers whose fit grows as O(C d^2) (GDA's class covariances) or O(N d) (kNN's index) estimate
their memory before allocating anything and refuse, in one line naming the estimate, the budget
and the alternatives, when it would not fit (:func:`check_memory`).

The budget is, first match wins: the value given to :func:`set_memory_budget` (what a
``--memory-budget`` flag sets for a run); ``$NCPROBE_MEMORY_BUDGET``; half of the memory available
now (psutil when installed, else ``/proc/meminfo``'s MemAvailable, else ``os.sysconf``; capped by
a cgroup v2 limit when one applies). Sizes are written as bytes or with a binary unit: ``8G``,
``512M``, ``1.5GiB``, ``64k`` (K/M/G/T = 2^10/2^20/2^30/2^40; ``B``, ``iB`` suffixes allowed).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

from .errors import NcprobeError

__all__ = [
    "ENV_VAR",
    "available_memory",
    "check_memory",
    "format_bytes",
    "memory_budget",
    "memory_budget_source",
    "parse_bytes",
    "set_memory_budget",
    "using_memory_budget",
]

ENV_VAR = "NCPROBE_MEMORY_BUDGET"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
#: used when the machine does not say how much memory it has
_FALLBACK_AVAILABLE = 4 << 30

_override: int | None = None


def parse_bytes(text) -> int:
    """``'8G'`` -> 8589934592; an int passes through. NcprobeError (one line) when unreadable."""
    if isinstance(text, bool):
        raise NcprobeError(f"memory size must be bytes or a size like 8G or 512M, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise NcprobeError(f"memory size must be bytes or a size like 8G or 512M, got {text!r}")
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not value >= 1:
        raise NcprobeError(f"memory size must be at least 1 byte, got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1: ``33554432`` -> ``'32.0 MiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit (None when there is no limit)."""
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_memory() -> int:
    """Bytes of memory available to this process now (a cgroup limit applies when lower)."""
    avail = None
    try:
        import psutil  # optional

        avail = int(psutil.virtual_memory().available)
    except Exception:  # not installed or unsupported platform
        avail = None
    if avail is None:
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            avail = _FALLBACK_AVAILABLE
    room = _cgroup_room()
    return min(avail, room) if room is not None else avail


def set_memory_budget(value) -> None:
    """Fix the budget for this process (bytes, or a size like ``'8G'``); None goes back to the
    environment variable / the default."""
    global _override
    _override = None if value is None else parse_bytes(value)


@contextmanager
def using_memory_budget(value):
    """``with using_memory_budget('1G'): ...`` sets the budget for the block, then restores it."""
    global _override
    old = _override
    set_memory_budget(value)
    try:
        yield
    finally:
        _override = old


def memory_budget_source() -> str:
    """Where the budget in force comes from, in words (for messages)."""
    if _override is not None:
        return "set for this run"
    if os.environ.get(ENV_VAR, "").strip():
        return f"from ${ENV_VAR}"
    return "half the available memory"


def memory_budget() -> int:
    """The budget in bytes: :func:`set_memory_budget`'s value, else ``$NCPROBE_MEMORY_BUDGET``,
    else half of :func:`available_memory`."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return parse_bytes(env)
        except NcprobeError:
            raise NcprobeError(f"${ENV_VAR}={env!r} is not a size; write bytes or e.g. 8G, 512M") from None
    return max(1, available_memory() // 2)


def check_memory(needed: int, what: str, alternatives: str, error: type[NcprobeError] = NcprobeError) -> None:
    """Raise ``error`` (one line) when ``needed`` bytes exceed the budget: ``'<what> needs about
    <needed> but the memory budget is <budget> (<source>); <alternatives>'``."""
    budget = memory_budget()
    if needed > budget:
        raise error(
            f"{what} needs about {format_bytes(needed)} but the memory budget is {format_bytes(budget)} "
            f"({memory_budget_source()}); {alternatives}, or raise the budget (${ENV_VAR})"
        )
