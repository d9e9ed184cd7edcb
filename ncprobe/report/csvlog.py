"""Appending a run's rows to the long-format CSV tables of an output folder: all or nothing, safe when
several runs write at once, readable by colleagues.

What is promised (README, "Nothing written is lost"):

* **All or nothing, across tables.** :func:`append_tables` appends one run's rows to several tables
  (``ood.csv``, ``collapse.csv``, ...) as one transaction. Either every table gets all of its rows or
  every table is left byte for byte as it was, whatever fails (a full disk, a permission, an I/O
  error, Ctrl-C). Before touching any table it writes a journal, ``<out>/.ncprobe-journal``, saying
  what it is about to do (the old size of each table appended to, the backup of each table
  rewritten); the journal's removal is the commit.
* **A killed run (kill -9, power loss) is undone.** What a kill can leave: a table with some of the
  run's rows (possibly a half row), a temporary ``.<table>.<tx>.tmp``, a backup ``.<table>.<tx>.bak``,
  and the journal. Readers (:func:`snapshot`, :func:`read_table`, the leaderboard) see the tables as
  they were before the interrupted write, with a one-line warning; the next write into the folder
  rolls the tables back to that state, removes the journal and the run's temporary files. If a table
  grew past what the interrupted write would have made (something unaware of the journal wrote after
  it), ncprobe refuses to guess and names the byte range to check by hand.
* **Rows already written are never rewritten differently.** Identifier columns
  (:data:`~ncprobe.report.schema.IDENTIFIER_COLUMNS`) are text: ``007``, ``NA`` and an empty group
  stay what they are. When a run brings a new column, the file is rewritten with the union of the
  columns, old rows keeping their text cell for cell (the new columns empty).
* **Concurrent runs** serialize on a lock of the output folder itself (``flock`` on the directory,
  opened read-only: no lock file, no write access needed to read under the lock). Where the file
  system cannot lock (some network mounts) ncprobe warns once and goes on unlocked.
* **Files are created with the umask's mode** (like any other program's), so colleagues who may read
  the folder may read the tables; a rewritten table keeps its permission bits.
* **Refusals before anything is written.** A table whose last line is incomplete (no newline at the
  end) and that no ncprobe journal explains was damaged by something else: ncprobe refuses to append
  to it (naming the file and the fix) rather than guess whether that line is a whole row.

Stale temporary files of ncprobe's own are removed by the next write, under the folder's lock: a
transaction's copies, backups and journal copy (``.<name>.csv.<12 hex>.tmp`` / ``.bak``,
``.ncprobe-journal.<12 hex>.tmp``, only ever written under that lock) at once; write probes
(``.ncprobe-probe.<12 hex>.tmp``), per-sample score copies (``.<run>.scores.npz.tmp.npz``) and older
versions' copies (``.<name>.csv.<8 chars>.tmp``), written without it, once older than
:data:`STALE_AGE_S`. Nothing else, nothing but regular files, never through a symlink.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import io
import json
import os
import re
import secrets
import socket
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import NcprobeError
from .schema import IDENTIFIER_COLUMNS

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: the journal of the transaction in progress (or interrupted) in an output folder
JOURNAL = ".ncprobe-journal"
#: ncprobe's own temporary files older than this (seconds) are removed by the next write
STALE_AGE_S = 3600.0
#: how long a write waits for another ncprobe run to release the folder's lock
LOCK_TIMEOUT_S = 600.0

# the strings pandas reads as missing in a number column (its defaults, spelled out: they are private)
NA_STRINGS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]

# ncprobe's temporary names. Written only under the folder's exclusive lock (so stale whenever that lock
# is ours): a transaction's table copies and backups and its journal's temporary copy.
_LOCKED_TEMP = re.compile(r"^\.(?:.+\.csv\.[0-9a-f]{12}\.(?:tmp|bak)|ncprobe-journal\.[0-9a-f]{12}\.tmp)$")
# Written without that lock: write probes, per-sample score files, older versions' mkstemp copies.
_UNLOCKED_TEMP = re.compile(r"^\.(?:.+\.csv\.[a-z0-9_]{8}\.tmp|ncprobe-probe\.[0-9a-f]{12}\.tmp"
                            r"|.+\.scores\.npz\.tmp\.npz)$")
_TABLE_NAME = re.compile(r"^[^/\\\x00]+\.csv$")


class OutputError(NcprobeError):
    """An output folder or table cannot be written or read: a permission, a full disk, a file in the way."""


class TableError(NcprobeError):
    """A table on disk is malformed: not a CSV, empty, columns missing, an incomplete last line."""


# ----------------------------------------------------------------------------------------------- errors

_WRITE_FIXES = {
    errno.ENOSPC: "free space on that disk or choose another output folder",
    errno.EDQUOT: "free space within your disk quota or choose another output folder",
    errno.EACCES: "ask for write permission there or choose another output folder",
    errno.EPERM: "ask for write permission there or choose another output folder",
    errno.EROFS: "that file system is mounted read-only; choose another output folder",
    errno.ENOTDIR: "a part of that path is a file, not a folder; remove the file or choose another output folder",
    errno.EEXIST: "a file is in the way; remove it or choose another output folder",
    errno.EISDIR: "that is a folder where a table file belongs; remove or rename it",
    errno.ENOENT: "the folder does not exist (or was removed meanwhile); create it or choose another output folder",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EIO: "the disk reported an I/O error; check the disk, or choose another output folder",
}
_READ_FIXES = {
    errno.EACCES: "ask for read permission or copy the file somewhere readable",
    errno.EPERM: "ask for read permission or copy the file somewhere readable",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of that path is a file, not a folder; check the path",
    errno.EISDIR: "that is a folder; pass the CSV file (or the folder holding ood.csv)",
    errno.EIO: "the disk reported an I/O error; check the disk or copy the file elsewhere",
}


def os_error(path, exc: OSError, *, reading: bool = False, note: str = "") -> OutputError:
    """The one-line :class:`OutputError` for an ``OSError`` met at ``path``: ``<path>: <reason>; <fix>``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    fixes = _READ_FIXES if reading else _WRITE_FIXES
    fix = fixes.get(exc.errno, "check the path and its permissions" + ("" if reading else ", or choose another output folder"))
    return OutputError(f"{path}: {reason}; {fix}{note}")


def _warn(message: str) -> None:
    warnings.warn(" ".join(message.split()), stacklevel=3)


# ------------------------------------------------------------------------------------------------ locks

class _DirLock:
    """``flock`` on the directory itself (opened read-only): exclusive for writers, shared for readers.

    Needs no lock file and no write access; the directory, unlike a table, is never replaced, so the
    lock always guards the files that are there. Where locking is not supported it warns and goes on.
    """

    def __init__(self, directory: Path, exclusive: bool):
        self.directory = Path(directory)
        self.exclusive = exclusive
        self.fd = None
        self.locked = False  # True once the flock is held

    def __enter__(self):
        if fcntl is None:  # pragma: no cover - Windows: no directory descriptors
            return self
        try:
            self.fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR) or self.exclusive:
                raise
            _warn(f"{self.directory}: cannot open the folder to lock it ({exc.strerror}); reading unlocked")
            return self
        op = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        delay = 0.001
        while True:
            try:
                fcntl.flock(self.fd, op | fcntl.LOCK_NB)
                self.locked = True
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._close()
                    raise OutputError(f"{self.directory}: still locked by another ncprobe run after "
                                      f"{LOCK_TIMEOUT_S:.0f} s; wait for it to finish (or stop it), then rerun") from None
                time.sleep(delay)
                delay = min(2 * delay, 0.05)
            except OSError as exc:  # ENOLCK, EOPNOTSUPP, EBADF on some network file systems
                _warn(f"{self.directory}: the file system cannot lock it ({exc.strerror}); ncprobe runs "
                      f"writing there at the same time may interleave their rows")
                return self

    def fsync_dir(self) -> None:
        """Make renames and removals in the directory durable (best effort: not every FS allows it)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)

    def _close(self):
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __exit__(self, *exc):
        self._close()
        return False


# ------------------------------------------------------------------------------- low-level file writes
# Module-level so that tests can make them fail after k bytes.

def _open_append(path: Path):
    """An existing file opened for appending, unbuffered (``write`` may write fewer bytes than asked)."""
    return open(path, "ab", buffering=0)


def _open_new(path: Path):
    """A new file (fails if it exists), with the umask's mode, unbuffered."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, "wb", buffering=0)


def _fsync(fd: int) -> None:
    os.fsync(fd)


def _write_all(fh, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = fh.write(view)
        if not n:
            raise OSError(errno.EIO, "the write made no progress")
        view = view[n:]


def _write_new_file(path: Path, data: bytes, mode: int | None = None) -> None:
    """``data`` to the new file ``path``, fsynced; removed again if anything fails."""
    try:
        fh = _open_new(path)
        try:
            _write_all(fh, data)
            if mode is not None:
                os.chmod(path, mode)
            _fsync(fh.fileno())
        finally:
            fh.close()
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


# ----------------------------------------------------------------------------------------- CSV helpers

def _rows_of(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The header and rows of ``df`` as the text cells pandas writes (NaN and None as empty cells)."""
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate column names in a table to append: {names}")
    text = df.to_csv(index=False, lineterminator="\n")
    records = list(csv.reader(io.StringIO(text, newline="")))
    return records[0], records[1:]


def _csv_bytes(records) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\n").writerows(records)
    return buf.getvalue().encode("utf-8")


def _decode(data: bytes, path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not a text CSV (byte {exc.start} is not UTF-8); it was not written by "
                         f"ncprobe or is damaged, pass a CSV table (or move this file away)") from None


def _ends_cleanly(path: Path, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def _incomplete_line_error(path: Path) -> TableError:
    return TableError(f"{path}: its last line is incomplete (no newline at the end: a write interrupted by a "
                      f"program other than this ncprobe, or a hand edit); nothing was appended, so that line "
                      f"is not guessed at; open the file and delete (or complete) the last line, then rerun")


def _read_header(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    header = next(csv.reader(io.StringIO(_decode(first, path), newline="")), [])
    if not header or any(not h for h in header) or len(set(header)) != len(header):
        raise TableError(f"{path}: the first line is not a header of distinct column names; the file was not "
                         f"written by ncprobe or is damaged, move it away (or repair its first line), then rerun")
    return header


# --------------------------------------------------------------------------------------- the transaction

@dataclass
class _Plan:
    name: str
    path: Path
    kind: str  # "create" | "append" | "rewrite"
    data: bytes
    old_size: int = 0
    mode: int | None = None  # rewrite: the permission bits the table keeps
    old_data: bytes = b""  # rewrite: the old bytes, for a backup where hard links are not supported


def _plan(path: Path, df: pd.DataFrame) -> _Plan:
    """What appending ``df`` to ``path`` writes; reads only."""
    header_new, rows = _rows_of(df)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _Plan(path.name, path, "create", _csv_bytes([header_new, *rows]))
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: not a regular file; remove or rename it so that the table can be written")
    if st.st_size == 0:
        return _Plan(path.name, path, "append", _csv_bytes([header_new, *rows]), old_size=0)
    if not _ends_cleanly(path, st.st_size):
        raise _incomplete_line_error(path)
    header = _read_header(path)
    extra = [c for c in header_new if c not in header]
    if not extra:  # same columns (any order, maybe fewer): append in the file's order, empty where absent
        pos = {c: i for i, c in enumerate(header_new)}
        body = [[r[pos[c]] if c in pos else "" for c in header] for r in rows]
        return _Plan(path.name, path, "append", _csv_bytes(body), old_size=st.st_size)
    # a new column: rewrite with the union of the columns; old rows keep their text cell for cell
    with open(path, "rb") as fh:
        old_data = fh.read()
    try:
        old = list(csv.reader(io.StringIO(_decode(old_data, path), newline="")))
    except csv.Error as exc:
        raise TableError(f"{path}: not a readable CSV ({exc}); repair it or move it away, then rerun") from None
    union = header + extra
    records = [union]
    for line, rec in enumerate(old[1:], start=2):
        if not rec:
            continue
        if len(rec) > len(header):
            raise TableError(f"{path}: line {line} has {len(rec)} cells but the header {len(header)}; the file "
                             f"is damaged, repair or delete that line, then rerun")
        records.append(rec + [""] * (len(union) - len(rec)))
    pos = {c: i for i, c in enumerate(header_new)}
    records += [[r[pos[c]] if c in pos else "" for c in union] for r in rows]
    return _Plan(path.name, path, "rewrite", _csv_bytes(records), old_size=st.st_size,
                 mode=stat.S_IMODE(st.st_mode), old_data=old_data)


def _tmp_name(name: str, tx: str) -> str:
    return f".{name}.{tx}.tmp"


def _bak_name(name: str, tx: str) -> str:
    return f".{name}.{tx}.bak"


def _apply(directory: Path, plan: _Plan, tx: str) -> None:
    if plan.kind == "append":
        fh = _open_append(plan.path)
        try:
            _write_all(fh, plan.data)
            _fsync(fh.fileno())
        finally:
            fh.close()
        return
    tmp = directory / _tmp_name(plan.name, tx)
    _write_new_file(tmp, plan.data, plan.mode)
    try:
        if plan.kind == "rewrite":
            bak = directory / _bak_name(plan.name, tx)
            try:
                os.link(plan.path, bak)
            except OSError:  # no hard links here: a copy
                _write_new_file(bak, plan.old_data, plan.mode)
        os.replace(tmp, plan.path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _rollback(directory: Path, entries: list[dict]) -> None:
    """Put every table of a journal back as it was before the transaction (idempotent)."""
    for e in reversed(entries):
        path = directory / e["name"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / _tmp_name(e["name"], e["tx"]))
        if e["kind"] == "append":
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_size > e["size"]:
                    os.truncate(path, e["size"])
        elif e["kind"] == "create":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        elif e["kind"] == "rewrite":
            bak = directory / _bak_name(e["name"], e["tx"])
            if os.path.lexists(bak):
                os.replace(bak, path)


def _load_journal(directory: Path) -> dict | None:
    """The journal of an interrupted write in ``directory`` (checked), or None."""
    path = directory / JOURNAL
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    try:
        journal = json.loads(raw.decode("utf-8"))
        tx = journal["tx"]
        entries = journal["files"]
        # only names of tables in this folder, only ncprobe's own kinds: a journal cannot point elsewhere
        if not (isinstance(tx, str) and re.fullmatch(r"[0-9a-f]{12}", tx) and isinstance(entries, list)):
            raise ValueError(tx)
        for e in entries:
            name = e["name"]
            if not (isinstance(name, str) and _TABLE_NAME.match(name) and not name.startswith(".")
                    and e["kind"] in ("append", "create", "rewrite")):
                raise ValueError(name)
            if e["kind"] == "append" and not (type(e["size"]) is int and e["size"] >= 0):
                raise ValueError(e["size"])
            e["tx"] = tx
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise TableError(f"{path}: not a journal written by ncprobe; check that the CSV tables beside it "
                         f"look right, then delete it and rerun") from None
    return journal


def _journal_note(journal: dict) -> str:
    return (f"pid {journal.get('pid', '?')} on {journal.get('host', '?')}, started {journal.get('started', '?')}, "
            f"tables {', '.join(e['name'] for e in journal['files'])}")


def _recover(directory: Path, lock: _DirLock) -> None:
    """Roll back the write a killed ncprobe run left half done (we hold the exclusive lock)."""
    journal = _load_journal(directory)
    if journal is None:
        return
    if not lock.locked and journal.get("host") == socket.gethostname() and _alive(journal.get("pid")):
        raise OutputError(f"{directory}: another ncprobe run (pid {journal.get('pid')}) is writing its tables there "
                          f"and this file system cannot lock; rerun when it has finished")
    for e in journal["files"]:  # a table that grew past the interrupted write: someone wrote after it
        end = e.get("end")
        path = directory / e["name"]
        if e["kind"] in ("append", "create") and isinstance(end, int) and path.exists() and path.stat().st_size > end:
            start = e.get("size", 0)
            raise TableError(f"{path}: it grew after an ncprobe write into it was interrupted ({_journal_note(journal)}), "
                             f"so ncprobe does not undo that write by itself; the interrupted rows lie in bytes "
                             f"{start} to {end} (or fewer): remove them by hand if present, then delete "
                             f"{directory / JOURNAL} and rerun")
    try:
        _rollback(directory, journal["files"])
        lock.fsync_dir()
        os.unlink(directory / JOURNAL)
        lock.fsync_dir()
    except OSError as exc:
        raise os_error(directory, exc, note=" (an interrupted earlier write could not be undone; nothing new was written)") from exc
    _warn(f"{directory}: undid a write interrupted before it finished ({_journal_note(journal)}); "
          f"those tables are back as they were before it")


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory, *, age_s: float = STALE_AGE_S, locked: bool = False) -> list[Path]:
    """Remove ncprobe's own temporary files in ``directory`` left by killed runs; never anything else
    (only ncprobe's name patterns, only regular files, never through a symlink). A file is removed when
    older than ``age_s`` seconds, or, for the names only ever written under the folder's exclusive
    lock, at once when ``locked`` (the caller holds that lock, so no live run is writing them).
    Returns what was removed."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        guarded = bool(_LOCKED_TEMP.match(entry.name))
        if not guarded and not _UNLOCKED_TEMP.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and ((guarded and locked) or now - st.st_mtime > age_s):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _commit(directory: Path, lock: _DirLock, plans: list[_Plan]) -> None:
    tx = secrets.token_hex(6)
    entries = []
    for p in plans:
        entry = {"name": p.name, "kind": p.kind, "tx": tx}
        if p.kind == "append":
            entry["size"] = p.old_size
        if p.kind in ("append", "create"):
            entry["end"] = p.old_size + len(p.data)  # the size once written: more means someone wrote after
        entries.append(entry)
    journal = {"ncprobe_journal": 1, "tx": tx, "pid": os.getpid(), "host": socket.gethostname(),
               "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "files": [{k: v for k, v in e.items() if k != "tx"} for e in entries]}
    jtmp = directory / f"{JOURNAL}.{tx}.tmp"
    try:
        _write_new_file(jtmp, json.dumps(journal, indent=1).encode("utf-8") + b"\n")
        os.replace(jtmp, directory / JOURNAL)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(jtmp)
        raise os_error(directory, exc, note=" (nothing was written)") from exc
    lock.fsync_dir()
    current = None
    try:
        for plan in plans:
            current = plan
            _apply(directory, plan, tx)
        current = None
        lock.fsync_dir()
        os.unlink(directory / JOURNAL)  # the commit
    except BaseException as exc:
        try:
            _rollback(directory, entries)
            lock.fsync_dir()
            os.unlink(directory / JOURNAL)
            lock.fsync_dir()
            note = " (every table is unchanged)"
        except OSError:
            note = (f" (the tables could not all be put back now; {directory / JOURNAL} records how, and "
                    f"the next ncprobe write there does it; readers ignore the half-written rows meanwhile)")
        if isinstance(exc, OSError):
            where = current.path if current is not None else directory
            raise os_error(where, exc, note=note) from exc
        raise
    lock.fsync_dir()
    for e in entries:
        if e["kind"] == "rewrite":
            with contextlib.suppress(OSError):
                os.unlink(directory / _bak_name(e["name"], tx))


def _ensure_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory}: is a file, not a folder; give a folder for the tables "
                          f"(or move that file away)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(directory, exc, note=" (nothing was written)") from exc


def append_tables(out_dir, tables: dict[str, pd.DataFrame | None]) -> Path:
    """Append each non-empty table of ``{"ood.csv": df, "collapse.csv": df, ...}`` to ``out_dir/<name>``
    (created with a header when absent) as ONE transaction: all rows of all tables, or none.

    Takes the folder's lock, undoes a write a killed run left half done, removes stale temporary
    files, checks every table (refusing one with an incomplete last line), then journals, writes,
    fsyncs and commits; on any failure every table is put back byte for byte and an
    :class:`OutputError` (``<path>: <reason>; <fix>``) is raised. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    items = {}
    for name, df in tables.items():
        if not _TABLE_NAME.match(str(name)) or str(name).startswith("."):
            raise ValueError(f"table names are plain file names ending in .csv, not {name!r}")
        if df is not None and not df.empty:
            items[str(name)] = df
    _ensure_dir(out_dir)
    if not items:
        return out_dir
    try:
        with _DirLock(out_dir, exclusive=True) as lock:
            _recover(out_dir, lock)
            remove_stale_temporaries(out_dir, locked=lock.locked)
            plans = []
            for name in sorted(items):  # a fixed order
                try:
                    plans.append(_plan(out_dir / name, items[name]))
                except OSError as exc:
                    raise os_error(out_dir / name, exc, note=" (nothing was written)") from exc
            _commit(out_dir, lock, plans)
    except OSError as exc:  # opening or locking the folder
        raise os_error(out_dir, exc, note=" (nothing was written)") from exc
    return out_dir


def append_rows(path, df: pd.DataFrame) -> Path:
    """Append ``df`` to the CSV at ``path`` (created with a header when absent): all rows or none."""
    path = Path(path)
    append_tables(path.parent, {path.name: df})
    return path


def check_writable(out_dir, tables=()) -> Path:
    """Fail early, before any computation, if ``out_dir`` cannot take a run's tables.

    Creates ``out_dir`` (and its parents) if needed, creates, writes, fsyncs and removes a probe file
    there (which catches a read-only or full file system, a missing permission, a file in the way), and
    for each name in ``tables`` that exists, checks it is a writable regular file whose last line is
    complete. Raises :class:`OutputError` / :class:`TableError` (one line); returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    _ensure_dir(out_dir)
    probe = out_dir / f".ncprobe-probe.{secrets.token_hex(6)}.tmp"
    try:
        _write_new_file(probe, b"ncprobe write probe\n")
        os.unlink(probe)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        raise os_error(out_dir, exc, note=" (checked before computing anything)") from exc
    try:
        journal = _load_journal(out_dir)
    except OSError as exc:
        raise os_error(out_dir / JOURNAL, exc, reading=True) from exc
    pending = {e["name"] for e in journal["files"]} if journal else set()
    for name in tables:
        path = out_dir / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise os_error(path, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{path}: not a regular file; remove or rename it so that the table can be written")
        if not os.access(path, os.W_OK):
            raise os_error(path, PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
                           note=" (checked before computing anything)")
        if st.st_size and name not in pending:
            try:
                clean = _ends_cleanly(path, st.st_size)
            except OSError as exc:
                raise os_error(path, exc, reading=True) from exc
            if not clean:
                raise _incomplete_line_error(path)
    return out_dir


# ------------------------------------------------------------------------------------------------ reads

def _committed(directory: Path, name: str, entry: dict | None) -> bytes | None:
    path = directory / name
    if entry is not None:
        if entry["kind"] == "create":
            return None
        if entry["kind"] == "rewrite":
            bak = directory / _bak_name(name, entry["tx"])
            if os.path.lexists(bak):
                path = bak
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    if entry is not None and entry["kind"] == "append":
        data = data[: entry["size"]]
    return data


def snapshot(directory, names) -> dict[str, bytes | None]:
    """The committed bytes of each table ``names`` in ``directory`` (None where absent), read together
    under the folder's shared lock: never a half-written row, never one table of a run without the
    others. A write a killed run left half done is ignored (with a warning). Raises ``OSError``."""
    directory = Path(directory)
    try:
        lock = _DirLock(directory, exclusive=False).__enter__()
    except (FileNotFoundError, NotADirectoryError):
        return {name: None for name in names}
    try:
        journal = _load_journal(directory)
        entries = {}
        if journal is not None:
            entries = {e["name"]: e for e in journal["files"]}
            _warn(f"{directory}: a write interrupted before it finished is ignored ({_journal_note(journal)}); "
                  f"the next ncprobe write into that folder undoes it")
        return {name: _committed(directory, name, entries.get(name)) for name in names}
    finally:
        lock.__exit__(None, None, None)


def parse_table(data: bytes, path, *, hint: str = "pass a CSV table written by ncprobe") -> pd.DataFrame:
    """A table's bytes as a DataFrame: identifier columns as text exactly as written (``NA``, ``007``,
    empty), the other columns as numbers where they parse. An incomplete last line (no newline at the
    end) is left out with a warning. Raises :class:`TableError` (one line naming ``path``) for an empty
    file, one that is not text, or one whose rows do not have the header's number of cells."""
    if not data.strip():
        raise TableError(f"{path}: the file is empty; {hint}")
    if b"\x00" in data:
        raise TableError(f"{path}: not a text CSV (it holds NUL bytes); {hint}")
    cut = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
    body, tail = data[:cut], data[cut:]
    text = _decode(body if body.strip() else data, path)
    if tail:
        if not body.strip():
            raise TableError(f"{path}: the file holds a single line without a newline at the end (an "
                             f"interrupted write?), no table; {hint}")
        _warn(f"{path}: its last line is incomplete (no newline at the end: an interrupted write?); "
              f"that line ({len(tail)} bytes) is left out")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        width = None
        for rec in reader:
            if not rec:
                continue
            if width is None:
                width = len(rec)
            elif len(rec) != width:
                raise TableError(f"{path}: not a readable CSV (line {reader.line_num} has {len(rec)} cells, the "
                                 f"header {width}); {hint}")
        header = [str(c) for c in pd.read_csv(io.StringIO(text), nrows=0, dtype=str).columns]
        dtype = {c: str for c in header if c in IDENTIFIER_COLUMNS}
        na = {c: NA_STRINGS for c in header if c not in IDENTIFIER_COLUMNS}
        return pd.read_csv(io.StringIO(text), dtype=dtype, keep_default_na=False, na_values=na, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, csv.Error) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise TableError(f"{path}: not a readable CSV ({detail}); {hint}") from None


def read_table(path, *, hint: str = "pass a CSV table written by ncprobe") -> pd.DataFrame:
    """The committed rows of the table at ``path``, typed as :func:`parse_table` does; a one-line
    :class:`NcprobeError` when it is absent, unreadable or malformed."""
    path = Path(path)
    try:
        data = snapshot(path.parent, [path.name])[path.name]
    except OSError as exc:
        raise os_error(path, exc, reading=True) from exc
    if data is None:
        raise TableError(f"{path} does not exist; {hint}")
    return parse_table(data, path, hint=hint)
