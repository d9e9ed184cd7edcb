"""Limits the dataset readers enforce before they allocate memory, and one-line OS error messages.

``NCPROBE_MAX_BYTES``: the most memory (bytes) one dataset may take when it is loaded, checked
*before* anything is allocated. Default: half of the machine's physical memory (8 GiB when that
cannot be read). Accepted values: a byte count (``8000000000``, ``8e9``) or one with a binary
suffix (``512M``, ``8G``, ``1.5GiB``, ``1T``). What counts: every ``.npz`` member read into memory
(its uncompressed size, ``ZipInfo.file_size``), the uint8 image array a conversion or a
``classes=``/``n=`` selection creates, and the int64 labels. Uncompressed (``numpy.savez``) uint8
image members of 64 MiB or more in (N, H, W, C) or (N, H, W) layout are memory-mapped from the
file and do not count; compressed (``numpy.savez_compressed``) ones must be inflated into memory
and do.

Images in folders are refused above :data:`MAX_IMAGE_PIXELS` pixels (Pillow's own decompression
bomb limit, 89,478,485 pixels: about 256 MiB once decoded to RGB); the size is read from the file
header before anything is decoded.
"""

from __future__ import annotations

import errno
import os
import re

from ..errors import DatasetError

ENV_MAX_BYTES = "NCPROBE_MAX_BYTES"
FALLBACK_MAX_BYTES = 8 * 1024**3
MAX_IMAGE_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS's default

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def physical_memory() -> int | None:
    """Bytes of physical memory, or None when the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def default_max_bytes() -> int:
    ram = physical_memory()
    return ram // 2 if ram and ram > 0 else FALLBACK_MAX_BYTES


def max_bytes() -> int:
    """The memory budget for one dataset: ``$NCPROBE_MAX_BYTES`` or half the physical memory."""
    text = os.environ.get(ENV_MAX_BYTES, "").strip()
    if not text:
        return default_max_bytes()
    m = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE]\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?", text)
    value = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else 0.0
    if not m or value < 1 or value != value or value == float("inf"):
        raise DatasetError(
            f"{ENV_MAX_BYTES}={text!r} is not a byte count; set it to e.g. 8000000000 or 8G (or unset it for "
            "half the physical memory)"
        )
    return int(value)


def human(n: int | float) -> str:
    """Bytes in words: 3.1 TB, 2.4 KB, 17 B (decimal units)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def check_budget(need: int, what: str, fix: str) -> None:
    """Raise DatasetError when ``need`` bytes exceed the budget; ``what`` says what needs them."""
    budget = max_bytes()
    if need > budget:
        raise DatasetError(
            f"{what} needs {human(need)} of memory, more than the {human(budget)} budget ({ENV_MAX_BYTES}); "
            f"{fix}, or raise {ENV_MAX_BYTES} if the machine has the memory"
        )


def shown(path) -> str:
    """A path as text that can always be printed and written (bytes that are not UTF-8 as \\xNN)."""
    try:
        raw = os.fsencode(path)
    except TypeError:
        return str(path)
    return raw.decode("utf-8", "backslashreplace")


_FIXES = {
    errno.EACCES: "check its permissions (the user running ncprobe must be able to read it)",
    errno.EPERM: "check its permissions (the user running ncprobe must be able to read it)",
    errno.ENOENT: "it disappeared while being read; make sure nothing moves or deletes the data, then retry",
    errno.ENOTDIR: "a part of the path is not a folder; check the path",
    errno.ELOOP: "it is a loop of symbolic links; remove or fix the link",
    errno.ENAMETOOLONG: "the name is too long for the file system; shorten it",
    errno.EIO: "the disk reported an I/O error; copy the data to a healthy disk",
    errno.EISDIR: "it is a folder where a file was expected; check the path",
    errno.EMFILE: "too many files are open; raise the limit (ulimit -n) or use fewer workers",
    errno.ENFILE: "too many files are open; raise the limit (ulimit -n) or use fewer workers",
    errno.ENOMEM: "the system is out of memory; use a smaller set or free memory",
}


def os_error(exc: OSError, path=None) -> DatasetError:
    """A one-line DatasetError for an OSError met while reading a dataset: '{path}: {reason}; {fix}'."""
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    fix = _FIXES.get(exc.errno or -1, "check that the file is readable and not being changed, then retry")
    return DatasetError(f"{shown(where) if where is not None else 'dataset'}: {reason}; {fix}")
