"""Appending rows to the long-format CSV tables, safely when several runs write at once.

Each append takes an exclusive lock on ``<file>.lock`` (fcntl where available), then either appends
the rows (same columns as the file) or, when the columns differ, rewrites the union of old and new
rows to a temporary file and renames it into place. Rows already written are never lost: a failed
write leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pandas as pd

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@contextlib.contextmanager
def locked(path: Path):
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append_rows(path, df: pd.DataFrame) -> Path:
    """Append ``df`` to the CSV at ``path`` (created with a header when absent)."""
    path = Path(path)
    if df.empty:
        return path
    with locked(path):
        if path.exists() and path.stat().st_size > 0:
            header = pd.read_csv(path, nrows=0).columns.tolist()
            if header == list(df.columns):
                buf = io.StringIO()
                df.to_csv(buf, header=False, index=False)
                with open(path, "a", newline="") as fh:
                    fh.write(buf.getvalue())
                    fh.flush()
                    os.fsync(fh.fileno())
                return path
            old = pd.read_csv(path)
            merged = pd.concat([old, df], ignore_index=True, sort=False)
            cols = header + [c for c in df.columns if c not in header]
            _write_atomic(path, merged[cols])
        else:
            _write_atomic(path, df)
    return path


def _write_atomic(path: Path, df: pd.DataFrame) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
