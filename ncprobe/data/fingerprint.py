"""Content fingerprints for data sources (the feature cache keys on them).

What a fingerprint covers: an ``.npz`` file under 64 MiB by the sha256 of its bytes (so a copied
or moved file keeps its cache); a larger ``.npz`` file by its size, modification time, inode number
and status-change time (ctime); image folders and torchvision directories by the sorted list of
their files' relative paths, each with the same four stat fields (plus the class folder names);
image lists (``.txt``) by the sha256 of the list file plus the resolved root and the same stat
fields of every listed file.
The ctime changes whenever a file is written, renamed, linked or has its times set, and unlike the
modification time it cannot be set back by a user (``touch``/``os.utime`` update it), so a file
rewritten with its size and mtime restored still gets a new fingerprint; a copy (new inode) gets
a new one too. What it does not cover: changes made while bypassing the file system (writing the
raw disk, resetting the system clock as root). Every fingerprint also carries
:data:`LOADER_VERSION`, bumped whenever the way ncprobe turns files into pixels changes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LOADER_VERSION = "ncprobe-data-1"
HASH_LIMIT = 64 * 1024 * 1024

_file_cache: dict[tuple, str] = {}


def digest(*parts) -> str:
    """Short sha256 of the parts joined as text."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The stat fields a fingerprint trusts: size, mtime, device, inode, ctime (all in ns)."""
    return (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_ctime_ns)


def file_fingerprint(path: str | Path) -> str:
    """sha256 of the file when it is under 64 MiB, else 'stat:size:mtime:inode:ctime' (cached per
    process, keyed on the same stat fields, so a rewrite with the mtime restored is seen)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), *_stat_key(st))
    if key in _file_cache:
        return _file_cache[key]
    if st.st_size < HASH_LIMIT:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out = f"sha256:{h.hexdigest()}"
    else:
        out = f"stat:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
    _file_cache[key] = out
    return out


def stat_fingerprint(paths, root: str | Path) -> str:
    """Digest of (relative path, size, mtime, inode, ctime) for each path, sorted; missing files count too."""
    root = Path(root)
    rows = []
    for p in sorted(Path(p) for p in paths):
        try:
            st = p.stat()
            rows.append(f"{os.path.relpath(p, root)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}")
        except OSError:
            rows.append(f"{os.path.relpath(p, root)}|missing")
    return digest(*rows)
