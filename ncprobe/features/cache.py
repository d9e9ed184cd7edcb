"""On-disk cache of extracted features, keyed by everything that determines them.

The key (:func:`cache_key`) hashes the checkpoint's sha256 (or a hash of its weights when it has no
file), the architecture (its name, classifier, a digest of the code that builds and runs it, and the
versions of the libraries involved: see :func:`ncprobe.features.extract.architecture_fingerprint`),
the dataset's content fingerprint, the preprocessing (input size, mean, std, mixed precision), the
probe points and the reduction. A changed checkpoint, architecture file, dataset or transform
therefore never reuses stale features.

Entries are per layer (:func:`layer_key`): a run that asks for some of the cached layers reads only
those, and one that asks for more runs the network for the new layers only. Entries of older
formats are never matched (their keys differ) and are rebuilt on first use.

An entry is a zip of stored (uncompressed) members: ``info.json``, ``labels.npy``, ``f<i>.npy`` and
``digest`` (a sha256 over all the others). Reading it checks every zip CRC, every array's declared
size against its member before allocating, and the digest, so a load returns exactly what was saved
or nothing: any failure to read an entry (truncated, bit-flipped, odd zip flags, not a regular
file, ...) means "rebuild", and the damaged entry is replaced. An entry that exists but cannot be
read for lack of permission (a colleague's file) is skipped: it is neither deleted nor overwritten.

Files are written to a temporary name in the cache directory (created with the umask's mode, so a
shared cache stays readable by the group) and renamed into place, so a reader never sees half an
entry and a crash leaves no half-written entry; temporaries left by a killed run are removed by the
next write once they are an hour old. When the cache cannot be written (read-only directory, full
disk, ``NCPROBE_CACHE`` naming a file) ncprobe warns (one line) and continues without caching.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .featureset import FeatureSet

#: 3: one entry per (set, layer), so a run on a subset or superset of cached layers reuses them
FORMAT_VERSION = 3

#: age (seconds) after which a temporary left in the cache directory is taken for a killed run's
TEMP_MAX_AGE = 3600.0
#: ncprobe's own temporaries: ``.<32 hex key>.<token>.tmp`` (``save`` writes these, and only these)
_TEMP_NAME = re.compile(r"\.[0-9a-f]{32}\.[A-Za-z0-9_-]{1,64}\.tmp")

#: lookup outcomes
HIT, MISS, DAMAGED, UNREADABLE = "hit", "miss", "damaged", "unreadable"

_INFO, _LABELS, _DIGEST = "info.json", "labels.npy", "digest"
_MAX_INFO_BYTES = 16 << 20
_CHUNK = 16 << 20


class _Damaged(Exception):
    """An entry that does not read back as written."""


def default_cache_dir() -> Path:
    env = os.environ.get("NCPROBE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/ncprobe/features").expanduser()


def cache_key(checkpoint_id: str, dataset_fingerprint: str, preprocess: dict, layers: list[str], reduction: str,
              architecture: dict | None = None) -> str:
    """32 hex digits identifying the features of one dataset under one checkpoint and architecture."""
    payload = {
        "format": FORMAT_VERSION,
        "checkpoint": checkpoint_id,
        "architecture": architecture or {},
        "dataset": dataset_fingerprint,
        "preprocess": preprocess,
        "layers": list(layers),
        "reduction": reduction,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def set_key(checkpoint_id: str, dataset_fingerprint: str, preprocess: dict, reduction: str,
            architecture: dict | None = None) -> str:
    """The key of one dataset's features under one checkpoint, architecture and preprocessing, for
    every layer: each layer's entry is filed under :func:`layer_key` of it."""
    return cache_key(checkpoint_id, dataset_fingerprint, preprocess, [], reduction, architecture=architecture)


def layer_key(set_key_: str, layer: str) -> str:
    """32 hex digits: the entry of one probe point's features (``layer``) within a :func:`set_key`."""
    return hashlib.sha256(f"{set_key_}|layer|{layer}".encode()).hexdigest()[:32]


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.npz"


def _why(exc: BaseException) -> str:
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return "not a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


# ---------------------------------------------------------------- reading


def _open_readonly(path: Path) -> int:
    """A read-only descriptor; O_NONBLOCK so that a FIFO planted under the entry's name cannot hang us."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))


def load(cache_dir: Path, key: str, name: str) -> FeatureSet | None:
    """The cached features for ``key``, or None when absent, unreadable or damaged."""
    return lookup(cache_dir, key, name)[0]


def lookup(cache_dir: Path, key: str, name: str) -> tuple[FeatureSet | None, str]:
    """``(features, state)``: state is HIT, MISS, DAMAGED (the entry was removed: rebuild it) or
    UNREADABLE (no permission: compute without the cache and leave the entry alone). Never raises
    for anything on disk."""
    path = _path(cache_dir, key)
    try:
        fd = _open_readonly(path)
    except (FileNotFoundError, NotADirectoryError):  # absent, or the cache "directory" is a file
        return None, MISS
    except PermissionError as exc:
        warnings.warn(f"feature cache entry {path} cannot be read ({_why(exc)}); computing the features "
                      f"without the cache and leaving the entry alone", stacklevel=3)
        return None, UNREADABLE
    except OSError as exc:  # ELOOP, EIO, ...
        _report_damage(path, exc, None)
        return None, DAMAGED
    st = None
    try:
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _Damaged("not a regular file")
            return _read_entry(fh, key, name, st.st_size), HIT
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file provokes, it means "rebuild"
        _report_damage(path, exc, st)
        return None, DAMAGED


def _report_damage(path: Path, exc: BaseException, st) -> None:
    why = str(exc) if isinstance(exc, _Damaged) else type(exc).__name__
    warnings.warn(f"feature cache entry {path} is damaged ({why}); rebuilding it", stacklevel=4)
    if st is None or not stat.S_ISREG(st.st_mode):
        return  # never remove a directory or something we could not open
    try:
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):  # not replaced meanwhile by a good entry
            os.unlink(path)
    except OSError:
        pass


def _read_entry(fh, key: str, name: str, file_size: int) -> FeatureSet:
    with zipfile.ZipFile(fh) as zf:
        members = {}
        for zinfo in zf.infolist():
            if zinfo.filename in members:
                raise _Damaged(f"duplicate member {zinfo.filename!r}")
            if zinfo.flag_bits & 0x1 or zinfo.compress_type != zipfile.ZIP_STORED:
                raise _Damaged(f"unexpected zip flags on {zinfo.filename!r}")
            if zinfo.file_size != zinfo.compress_size or zinfo.file_size > file_size:
                raise _Damaged(f"bad size of {zinfo.filename!r}")
            members[zinfo.filename] = zinfo

        def member(member_name: str) -> zipfile.ZipInfo:
            if member_name not in members:
                raise _Damaged(f"missing {member_name!r}")
            return members[member_name]

        h = hashlib.sha256()
        raw_info = _read_small(zf, member(_INFO))
        h.update(raw_info)
        info = json.loads(raw_info.decode("utf-8"))
        if not isinstance(info, dict) or info.get("format") != FORMAT_VERSION or info.get("key") != key:
            raise _Damaged("wrong key or format")
        layers, meta = info.get("layers"), info.get("meta", {})
        if (not isinstance(layers, list) or not all(isinstance(x, str) for x in layers)
                or len(set(layers)) != len(layers) or not isinstance(meta, dict)):
            raise _Damaged("bad layer list")
        labels = _read_array(zf, member(_LABELS), h, ndim=1)
        feats = {layer: _read_array(zf, member(f"f{i}.npy"), h, ndim=2) for i, layer in enumerate(layers)}
        expected = _read_small(zf, member(_DIGEST)).decode("ascii")
        if set(members) != {_INFO, _LABELS, _DIGEST, *(f"f{i}.npy" for i in range(len(layers)))}:
            raise _Damaged("unexpected members")
    if expected != h.hexdigest():
        raise _Damaged("checksum mismatch")
    n = len(labels)
    if labels.dtype.kind not in "iu" or any(v.shape[0] != n or v.dtype.kind != "f" for v in feats.values()):
        raise _Damaged("inconsistent arrays")
    return FeatureSet(name=name, layers=layers, features=feats, labels=labels, from_cache=True, meta=meta)


def _read_small(zf: zipfile.ZipFile, zinfo: zipfile.ZipInfo) -> bytes:
    if zinfo.file_size > _MAX_INFO_BYTES:
        raise _Damaged(f"{zinfo.filename!r} is too large")
    data = zf.read(zinfo)  # checks the CRC
    if len(data) != zinfo.file_size:
        raise _Damaged(f"short {zinfo.filename!r}")
    return data


def _read_array(zf: zipfile.ZipFile, zinfo: zipfile.ZipInfo, h, ndim: int) -> np.ndarray:
    """One .npy member, its declared size checked against the member before anything is allocated,
    read to the end so that the zip CRC is verified; its bytes go into ``h``. A large member (over
    a sixteenth of the memory budget) is verified in chunks and then memory-mapped from the entry
    (members are stored uncompressed), so reading a set larger than RAM needs no RAM for it."""
    fmt = np.lib.format
    with zf.open(zinfo) as m:
        version = fmt.read_magic(m)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(m)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(m)
        else:
            raise _Damaged(f"unknown .npy version in {zinfo.filename!r}")
        if (dtype.kind not in "biuf" or dtype.fields is not None or dtype.hasobject or len(shape) != ndim
                or any(not isinstance(s, int) or s < 0 for s in shape)):
            raise _Damaged(f"bad array header in {zinfo.filename!r}")
        nbytes = math.prod(shape) * dtype.itemsize
        header = m.tell()
        if header + nbytes != zinfo.file_size:
            raise _Damaged(f"size mismatch in {zinfo.filename!r}")
        h.update(f"{zinfo.filename}|{dtype.str}|{shape}|{fortran}|".encode())
        if nbytes > _map_threshold():
            _hash_stream(m, nbytes, h, zinfo.filename)
            return _map_member(zf, zinfo, header, dtype, shape, fortran)
        flat = np.empty(math.prod(shape), dtype=dtype)
        buf = memoryview(flat).cast("B") if nbytes else memoryview(b"")
        pos = 0
        while pos < nbytes:
            got = m.readinto(buf[pos : pos + _CHUNK])
            if not got:
                raise _Damaged(f"truncated {zinfo.filename!r}")
            pos += got
        if m.read(1):
            raise _Damaged(f"trailing data in {zinfo.filename!r}")
    h.update(buf)
    return flat.reshape(shape, order="F" if fortran else "C")


def _map_threshold() -> int:
    from ..budget import memory_budget

    return max(_CHUNK, memory_budget() // 16)


def _hash_stream(m, nbytes: int, h, name: str) -> None:
    """Read a member's remaining ``nbytes`` in chunks (the zip CRC is checked at its end) into ``h``."""
    scratch = bytearray(min(_CHUNK, nbytes))
    view = memoryview(scratch)
    left = nbytes
    while left:
        got = m.readinto(view[: min(len(view), left)])
        if not got:
            raise _Damaged(f"truncated {name!r}")
        h.update(view[:got])
        left -= got
    if m.read(1):
        raise _Damaged(f"trailing data in {name!r}")


def _map_member(zf: zipfile.ZipFile, zinfo: zipfile.ZipInfo, header: int, dtype, shape, fortran) -> np.ndarray:
    """A read-only memory map of a stored member's array data, located from its local file header."""
    fh = zf.fp
    fh.seek(zinfo.header_offset)
    local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise _Damaged(f"bad local header of {zinfo.filename!r}")
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    offset = zinfo.header_offset + 30 + name_len + extra_len + header
    return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="F" if fortran else "C")


# ---------------------------------------------------------------- writing


def save(cache_dir: Path, key: str, fs: FeatureSet) -> Path | None:
    """Write ``fs`` atomically under ``key``; the file's path, or None (with a warning) when the cache
    cannot be written."""
    cache_dir = Path(cache_dir)
    path = _path(cache_dir, key)
    tmp = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(cache_dir)
        tmp = cache_dir / f".{key}.{os.getpid()}-{secrets.token_hex(6)}.tmp"
        # O_EXCL: never follow a planted link; 0o666: the umask decides, as for any file the user creates
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        with _open_temp(fd) as fh:
            _write_entry(fh, key, fs)
        os.replace(tmp, path)
    except OSError as exc:
        _discard_temp(tmp)
        warnings.warn(f"cannot write the feature cache in {cache_dir} ({_why(exc)}); continuing without caching",
                      stacklevel=3)
        return None
    except BaseException:
        _discard_temp(tmp)
        raise
    return path


def _open_temp(fd: int):
    return os.fdopen(fd, "wb")


def _discard_temp(tmp: Path | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _write_entry(fh, key: str, fs: FeatureSet) -> None:
    info = {"format": FORMAT_VERSION, "key": key, "layers": list(fs.layers), "meta": fs.meta}
    raw_info = json.dumps(info, default=str).encode("utf-8")
    h = hashlib.sha256(raw_info)
    arrays = [(_LABELS, np.asarray(fs.labels))]
    arrays += [(f"f{i}.npy", np.asarray(fs.features[layer])) for i, layer in enumerate(fs.layers)]
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_INFO, raw_info)
        for member_name, arr in arrays:
            arr = np.ascontiguousarray(arr)
            with zf.open(member_name, "w", force_zip64=True) as m:
                np.lib.format.write_array(m, arr, allow_pickle=False)
            h.update(f"{member_name}|{arr.dtype.str}|{arr.shape}|False|".encode())
            h.update(memoryview(arr).cast("B") if arr.size else b"")
        zf.writestr(_DIGEST, h.hexdigest())


def remove_stale_temporaries(cache_dir: Path, max_age: float = TEMP_MAX_AGE) -> int:
    """Remove ncprobe's own temporaries (``.<key>.<token>.tmp``, regular files) older than ``max_age``
    seconds: leftovers of a killed run. Anything else is left alone. Returns how many went."""
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(cache_dir))
    except OSError:
        return 0
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed
