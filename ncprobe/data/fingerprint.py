"""Content fingerprints for data sources (the feature cache keys on them).

Files under 64 MiB are identified by their sha256 (so a copied or moved file keeps its cache),
larger ones by size + modification time; folders and torchvision directories by the sorted list of
relative paths with sizes and modification times. Every fingerprint also carries
:data:`LOADER_VERSION`, bumped whenever the way ncprobe turns files into pixels changes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LOADER_VERSION = "ncprobe-data-1"
HASH_LIMIT = 64 * 1024 * 1024

_file_cache: dict[tuple[str, int, int], str] = {}


def digest(*parts) -> str:
    """Short sha256 of the parts joined as text."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def file_fingerprint(path: str | Path) -> str:
    """sha256 of the file when it is under 64 MiB, else 'size:mtime' (cached per process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _file_cache:
        return _file_cache[key]
    if st.st_size < HASH_LIMIT:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out = f"sha256:{h.hexdigest()}"
    else:
        out = f"stat:{st.st_size}:{st.st_mtime_ns}"
    _file_cache[key] = out
    return out


def stat_fingerprint(paths, root: str | Path) -> str:
    """Digest of (relative path, size, mtime) for each path, sorted; missing files count too."""
    root = Path(root)
    rows = []
    for p in sorted(Path(p) for p in paths):
        try:
            st = p.stat()
            rows.append(f"{os.path.relpath(p, root)}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            rows.append(f"{os.path.relpath(p, root)}|missing")
    return digest(*rows)
