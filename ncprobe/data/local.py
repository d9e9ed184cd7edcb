"""Local sources: an ``.npz`` file of arrays, or a folder of image files.

``.npz``: images under ``x`` (also accepted: ``images``, ``X``, ``data``) and integer labels under
``y`` (also ``labels``, ``Y``, ``targets``); an optional 1-D string array ``classes`` names them.
Image layouts: (N, H, W, C) with C in {1, 3}, (N, H, W) grey, or (N, C, H, W) when the last axis
is not 1/3 but the second is. Pixel rule for non-uint8 arrays: floats whose values all lie in
[0, 1] are scaled by 255; other floats and integers must lie in [0, 255]; both are rounded to the
nearest integer. Anything else is refused. Labels are class ids 0 <= y < 1,000,000
(:data:`MAX_CLASSES`), or -1 for unknown; other values (negative, beyond int64, fractional) are
refused. An ``.npz`` without labels loads only when asked for with ``@unlabelled=1`` (labels -1),
so a forgotten ``y`` never passes silently.

The archive is read with :mod:`zipfile`, never with pickle: every member's ``.npy`` header (shape,
dtype) is checked against the size the archive stores for it, and the memory the load needs
against ``$NCPROBE_MAX_BYTES`` (see :mod:`ncprobe.data.limits`), before anything is allocated.
Uncompressed (``numpy.savez``) image members of 64 MiB or more (:data:`MMAP_MIN_BYTES`) are
memory-mapped from the file, so a uint8 (N, H, W, C) or (N, H, W) image array is not copied into
memory; compressed ones are inflated into memory. Do not rewrite a memory-mapped ``.npz`` in place
while a job reads it (a file that shrinks under a mapping ends the process with SIGBUS): write a new
file and rename it over the old one.

Folder: class sub-folders (sorted by name, hidden ones skipped, empty ones kept so that ids stay
aligned between a train and a test folder) give the labels; a flat folder of images is unlabelled.
Within a class, images (in nested folders too) come in ``torchvision.datasets.ImageFolder``'s
order: folders by their path as text, then files by name, both sorted as Python sorts strings. So
a torchvision ``ImageFolder`` tree loads with the same classes, the same label of every index and
the same order, except where ncprobe reads differently on purpose: hidden (``.name``) folders and
files are skipped (torchvision counts a hidden folder such as ``.ipynb_checkpoints`` as a class and
reads hidden images); ``.gif`` files are read (torchvision's ``IMG_EXTENSIONS`` leave them out);
empty class folders are kept as classes (torchvision refuses them unless ``allow_empty=True``, and
then agrees); a folder linked twice within one class is read once (torchvision reads it twice) and
a link loop is skipped (torchvision's walk would not end).
Symbolic links are followed, but every directory (by device and inode) is read once: a link back
to a folder already read (a loop) is skipped, a class folder that is the folder itself, one of its
parents or another class, and a folder reached from two classes are refused. Class folder names
must be valid UTF-8. Images are read with PIL and converted to RGB on access; images over
:data:`~ncprobe.data.limits.MAX_IMAGE_PIXELS` pixels are refused from their header.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .items import IMAGE_EXTENSIONS, ImageFileLoader, is_image_file
from .limits import check_budget, human, os_error, shown
from .tvsets import RawSet

X_KEYS = ("x", "images", "X", "data")
Y_KEYS = ("y", "labels", "Y", "targets")
MAX_CLASSES = 1_000_000  # labels must be below this: ids index per-class arrays of this length
NOT_NPZ_FIX = "save it with numpy.savez(x=..., y=...)"
_CHUNK_BYTES = 64 * 1024 * 1024  # work memory of one conversion step (float64 elements)
_READ_BYTES = 16 * 1024 * 1024  # one read from a compressed member
#: uncompressed image members this large or larger are memory-mapped; smaller ones are read (a copy
#: in memory cannot be changed under a running job by a rewrite of the file, nor crash it with SIGBUS)
MMAP_MIN_BYTES = 64 * 1024 * 1024


def _layout(shape: tuple, where: str) -> tuple[bool, tuple]:
    """(transpose NCHW -> NHWC?, the (N, H, W, C) shape) for an image array's shape; raises for others."""
    if len(shape) == 3:
        transpose, out = False, (*shape, 1)
    elif len(shape) == 4:
        if shape[3] not in (1, 3) and shape[1] in (1, 3):
            transpose, out = True, (shape[0], shape[2], shape[3], shape[1])
        elif shape[3] not in (1, 3):
            raise DatasetError(
                f"{where}: images of shape {tuple(shape)} have {shape[3]} channels; store (N, H, W, 3) "
                "RGB or (N, H, W) grey"
            )
        else:
            transpose, out = False, tuple(shape)
    else:
        raise DatasetError(f"{where}: images have shape {tuple(shape)}; store (N, H, W, C) or (N, H, W)")
    if out[0] and not (out[1] and out[2]):
        raise DatasetError(f"{where}: images of shape {tuple(shape)} have no pixels; store (N, H, W, C) with H, W >= 1")
    return transpose, out


def _check_image_dtype(dtype: np.dtype, where: str) -> None:
    if dtype != np.uint8 and dtype.kind not in "fiu":
        raise DatasetError(f"{where}: images have dtype {dtype}; store uint8 (or floats in [0, 1])")


def _nhwc(x: np.ndarray, transpose: bool) -> np.ndarray:
    if x.ndim == 3:
        return x[:, :, :, None]
    return x.transpose(0, 2, 3, 1) if transpose else x


def to_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    """Apply the documented layout and pixel rules; returns a contiguous (N, H, W, C) uint8 array.

    A C-contiguous uint8 input in (N, H, W, C) or (N, H, W) layout is returned without a copy (a
    memory map stays one); other inputs are converted a slice at a time, so the only full-size
    allocation is the uint8 result.
    """
    transpose, out_shape = _layout(x.shape, where)
    _check_image_dtype(x.dtype, where)
    view = _nhwc(x, transpose)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(view)
    if x.size == 0:
        return np.zeros(out_shape, dtype=np.uint8)
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DatasetError(f"{where}: images contain NaN or inf; store finite values in [0, 1] or [0, 255]")
    scale = x.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0
    if not scale and (lo < 0.0 or hi > 255.0):
        raise DatasetError(
            f"{where}: pixel values span [{lo:g}, {hi:g}]; store uint8, or floats in [0, 1] or [0, 255]"
        )
    out = np.empty(out_shape, dtype=np.uint8)
    per_item = max(1, math.prod(out_shape[1:]) * 8)
    step = max(1, _CHUNK_BYTES // per_item)
    for i in range(0, out_shape[0], step):
        part = np.asarray(view[i:i + step])
        if x.dtype.kind == "f":
            out[i:i + step] = np.rint(part * 255.0 if scale else part).astype(np.uint8)
        else:
            out[i:i + step] = part.astype(np.uint8)
    return out


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"{where}: labels have shape {y.shape} but there are {n} images; store y as (N,) integers")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
            raise DatasetError(f"{where}: labels are not whole numbers; store y as (N,) integers")
    elif y.dtype.kind not in "iub":
        raise DatasetError(f"{where}: labels have dtype {y.dtype}; store y as (N,) integers")
    if len(y):
        # compare in the stored type (as Python numbers), before a cast can wrap (uint64 2**64-1 -> -1)
        lo, hi = y.min().item(), y.max().item()
        if lo < -1:
            raise DatasetError(f"{where}: labels must be class ids >= 0 (or -1 for unknown), found {_num(lo)}; "
                               "store y as (N,) integers 0..C-1")
        if hi >= MAX_CLASSES:
            raise DatasetError(
                f"{where}: label {_num(hi)} is not a usable class id (ids are 0 to {MAX_CLASSES - 1:,}, or -1 for "
                "unknown); renumber the classes 0..C-1, e.g. with numpy.unique(y, return_inverse=True)[1]"
            )
    return y.astype(np.int64)


# ---------------------------------------------------------------- .npz archives, read without pickle


@dataclass
class _Member:
    """One ``.npy`` member of an archive, as its header describes it (nothing read yet)."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple
    dtype: np.dtype
    fortran: bool
    header_len: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def stored(self) -> bool:  # not compressed: can be memory-mapped from the file
        return self.info.compress_type == zipfile.ZIP_STORED

    @property
    def mapped(self) -> bool:  # the image member is memory-mapped rather than read
        return self.stored and self.nbytes >= MMAP_MIN_BYTES


def _not_npz(path: Path, why: str) -> DatasetError:
    return DatasetError(f"{shown(path)} is not a .npz archive ({why}); {NOT_NPZ_FIX}")


def _open_npz(path: Path) -> zipfile.ZipFile:
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        raise _not_npz(path, "it holds a single .npy array")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        why = ("the file is empty" if not head else
               "it is a Python pickle, which ncprobe never loads" if head[:1] == b"\x80" else "it is not a zip file")
        raise _not_npz(path, why)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, struct.error) as e:
        raise _not_npz(path, f"a damaged zip file: {e}") from None


def _read_header(fp, where: str) -> tuple[tuple, bool, np.dtype, int]:
    """Parse an .npy header from a file object -> (shape, fortran_order, dtype, header length)."""
    magic = fp.read(8)
    if len(magic) < 8 or not magic.startswith(b"\x93NUMPY"):
        raise DatasetError(f"{where} is not a numpy array (no .npy header); {NOT_NPZ_FIX}")
    major = magic[6]
    if major == 1:
        size_bytes, encoding = 2, "latin1"
    elif major in (2, 3):
        size_bytes, encoding = 4, "latin1" if major == 2 else "utf-8"
    else:
        raise DatasetError(f"{where}: unknown .npy format version {major}.{magic[7]}; {NOT_NPZ_FIX} with this numpy")
    raw_len = fp.read(size_bytes)
    if len(raw_len) < size_bytes:
        raise DatasetError(f"{where}: the .npy header is cut short; the file is damaged, {NOT_NPZ_FIX}")
    hlen = int.from_bytes(raw_len, "little")
    if hlen > 10000:
        raise DatasetError(f"{where}: the .npy header declares {hlen} bytes (numpy writes < 10000); the file is "
                           f"damaged or forged, {NOT_NPZ_FIX}")
    text = fp.read(hlen)
    try:
        if len(text) < hlen:
            raise ValueError("cut short")
        d = ast.literal_eval(text.decode(encoding))
        if not isinstance(d, dict) or not {"descr", "fortran_order", "shape"} <= set(d):
            raise ValueError("missing keys")
        shape, fortran = d["shape"], d["fortran_order"]
        if (not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape)
                or not isinstance(fortran, bool)):
            raise ValueError("bad shape or order")
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise DatasetError(f"{where}: the .npy header is not valid; the file is damaged or forged, "
                           f"{NOT_NPZ_FIX}") from None
    if dtype.hasobject:
        raise DatasetError(f"{where} holds Python objects (dtype {dtype}), which ncprobe never unpickles; store plain "
                           "numeric arrays (and classes as a numpy string array)")
    return shape, fortran, dtype, size_bytes + 8 + hlen


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, path: Path) -> _Member:
    where = f"{shown(path)} [{key}]"
    if info.flag_bits & 0x1:
        raise DatasetError(f"{where} is encrypted; save the arrays again without a password with numpy.savez")
    try:
        with zf.open(info) as fp:
            shape, fortran, dtype, header_len = _read_header(fp, where)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, struct.error) as e:
        raise DatasetError(f"{where}: the archive is damaged ({e}); {NOT_NPZ_FIX}") from None
    m = _Member(key, info, shape, dtype, fortran, header_len)
    stored = info.file_size - header_len
    if m.nbytes != stored:
        raise DatasetError(
            f"{where}: its header declares shape {shape} of {dtype} ({human(m.nbytes)}) but the archive holds "
            f"{human(max(stored, 0))} of data for it; the file is truncated or forged, {NOT_NPZ_FIX}"
        )
    return m


def _data_offset(fh, m: _Member, where: str) -> int:
    """Offset in the file of a stored member's array data (after the zip and .npy headers)."""
    fh.seek(m.info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise DatasetError(f"{where}: the zip entry header is missing; the file is damaged, {NOT_NPZ_FIX}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = m.info.header_offset + 30 + name_len + extra_len
    fh.seek(start)
    if fh.read(6) != b"\x93NUMPY":
        raise DatasetError(f"{where}: the zip entry does not start with an .npy header; the file is damaged, "
                           f"{NOT_NPZ_FIX}")
    end = start + m.header_len + m.nbytes
    if end > os.fstat(fh.fileno()).st_size:
        raise DatasetError(f"{where}: the file ends before the array's data; it is truncated, {NOT_NPZ_FIX}")
    return start + m.header_len


def _load(zf: zipfile.ZipFile, fh, m: _Member, path: Path, mmap: bool) -> np.ndarray:
    """The member's array: memory-mapped when ``mmap`` and ``m.mapped``, else read (size already checked)."""
    where = f"{shown(path)} [{m.key}]"
    order = "F" if m.fortran else "C"
    if m.nbytes == 0:
        return np.empty(m.shape, dtype=m.dtype, order=order)
    if mmap and m.mapped:
        offset = _data_offset(fh, m, where)
        # the checksum a read through zipfile would verify, a slice at a time (no copy in memory)
        fh.seek(offset - m.header_len)
        crc = zlib.crc32(fh.read(m.header_len))
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(m.nbytes,))
        for i in range(0, m.nbytes, _READ_BYTES):
            crc = zlib.crc32(raw[i:i + _READ_BYTES], crc)
        if crc != m.info.CRC:
            raise DatasetError(f"{where}: the data do not match the archive's CRC-32 checksum; the file is damaged, "
                               f"{NOT_NPZ_FIX}")
        return np.memmap(path, dtype=m.dtype, mode="r", offset=offset, shape=m.shape, order=order)
    try:
        with zf.open(m.info) as fp:
            fp.read(m.header_len)
            out = np.empty(math.prod(m.shape), dtype=m.dtype)
            view = out.view(np.uint8)
            got = 0
            while got < m.nbytes:
                n = fp.readinto(view[got:got + _READ_BYTES])
                if not n:
                    break
                got += n
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, struct.error) as e:
        raise DatasetError(f"{where}: the archive is damaged ({e}); {NOT_NPZ_FIX}") from None
    if got != m.nbytes:
        raise DatasetError(f"{where}: the data end after {human(got)} of {human(m.nbytes)}; the file is truncated, "
                           f"{NOT_NPZ_FIX}")
    return out.reshape(m.shape, order=order)


def _needs(m: _Member, nbytes_out: int, in_place: bool) -> int:
    """Memory to hold image member ``m`` read (0 when it is mapped) plus its converted copy (0 when none)."""
    return (0 if m.mapped else m.nbytes) + (0 if in_place else nbytes_out)


def read_npz(path: Path, *, unlabelled: bool = False) -> RawSet:
    path = Path(path)
    try:
        with _open_npz(path) as zf, open(path, "rb") as fh:
            return _read_npz(zf, fh, path, unlabelled)
    except OSError as e:
        raise os_error(e, path) from None


def _read_npz(zf: zipfile.ZipFile, fh, path: Path, unlabelled: bool) -> RawSet:
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in infos:
            raise DatasetError(f"{shown(path)} has two members named {key!r} (tools disagree on which one counts); "
                               f"{NOT_NPZ_FIX}")
        infos[key] = info
    keys = list(infos)
    xkey = next((k for k in X_KEYS if k in keys), None)
    if xkey is None:
        raise DatasetError(
            f"{shown(path)} has no 'x' array of images (keys found: {', '.join(keys) or 'none'}); save images as "
            "x (N, H, W, C uint8)"
        )
    ykey = next((k for k in Y_KEYS if k in keys), None) if not unlabelled else None
    if ykey is None and not unlabelled:
        raise DatasetError(
            f"{shown(path)} has no 'y' array of labels (keys found: {', '.join(keys)}); add y (N,) integer labels, "
            f"or load it as unlabelled with '{shown(path)}@unlabelled=1'"
        )
    # 1. every header, checked against the stored sizes; the layout and dtype rules, from the headers
    xm = _member(zf, infos[xkey], xkey, path)
    where_x = f"{shown(path)} [{xkey}]"
    transpose, out_shape = _layout(xm.shape, where_x)
    _check_image_dtype(xm.dtype, where_x)
    n = out_shape[0]
    ym = _member(zf, infos[ykey], ykey, path) if ykey is not None else None
    cm = _member(zf, infos["classes"], "classes", path) if ykey is not None and "classes" in infos else None
    # 2. the memory all of it needs, against the budget, before anything is allocated
    x_in_place = xm.dtype == np.uint8 and not transpose and not xm.fortran
    parts = [(f"[{xkey}]", _needs(xm, math.prod(out_shape), x_in_place))]
    if ym is not None:
        parts.append((f"[{ykey}]", ym.nbytes + 8 * max(n, 1)))
    if cm is not None:
        parts.append(("[classes]", cm.nbytes))
    total = sum(b for _, b in parts)
    if not xm.stored:
        fix = "save it uncompressed with numpy.savez (not savez_compressed) so the images can be memory-mapped"
    elif not x_in_place:
        fix = "store the images as uint8 (N, H, W, C) with numpy.savez so they are memory-mapped, not converted"
    else:
        fix = "use a smaller set"
    detail = ", ".join(f"{k} {human(b)}" for k, b in parts if b)
    check_budget(total, f"{shown(path)} ({detail})", fix)
    # 3. read
    if n == 0:
        raise DatasetError(f"{shown(path)} holds no images; give a file with at least one")
    x = to_uint8_images(_load(zf, fh, xm, path, mmap=True), where_x)
    classes = None
    if ym is not None:
        y = _labels(_load(zf, fh, ym, path, mmap=False), n, f"{shown(path)} [{ykey}]")
        if cm is not None:
            names = _load(zf, fh, cm, path, mmap=False)
            if names.ndim == 1 and names.dtype.kind in "US" and len(names) > (y.max() if len(y) else -1):
                classes = [c.decode("utf-8", "backslashreplace") if isinstance(c, bytes) else str(c)
                           for c in names.tolist()]
    else:
        y = np.full(n, -1, dtype=np.int64)
    return RawSet(labels=y, files=[path], images=x, classes=classes)


# ---------------------------------------------------------------- image folders

_ANCESTOR = -1  # owner of the folder being read and of its parents in the ``seen`` table


def _dir_key(path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _check_entry(entry: os.DirEntry) -> str:
    """'dir', 'image', or 'other' for a directory entry (symbolic links followed); raises for a
    broken link and for an image name that is not a regular file (a pipe would hang the reader)."""
    try:
        if entry.is_dir():
            return "dir"
        is_file = entry.is_file()
    except OSError as e:
        raise os_error(e, entry.path) from None
    if not is_file and entry.is_symlink() and not os.path.exists(entry.path):
        raise DatasetError(f"{shown(entry.path)} is a broken symbolic link (its target "
                           f"{shown(os.readlink(entry.path))} does not exist); remove it or fix its target")
    if not is_image_file(entry.name):
        return "other"
    if not is_file:
        raise DatasetError(f"{shown(entry.path)} is not a regular file (a pipe, socket or device); remove it "
                           "from the folder")
    return "image"


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise os_error(e, folder) from None


def _images_under(folder: Path, owner: int, classes: list[str], seen: dict) -> list[Path]:
    """Image files under a class folder in torchvision's ``ImageFolder`` order (folders by path text,
    then files by name); each directory (device, inode) is read once, links back to a folder already
    read are skipped."""
    out: list[Path] = []
    stack = [folder]
    while stack:
        cur = stack.pop()
        subdirs = []
        for entry in _scan(cur):
            kind = _check_entry(entry)
            if kind == "image":
                out.append(Path(entry.path))
            elif kind == "dir":
                try:
                    key = _dir_key(entry.path)
                except OSError as e:
                    raise os_error(e, entry.path) from None
                first = seen.get(key)
                if first is None:
                    seen[key] = (owner, entry.path)
                    subdirs.append(Path(entry.path))
                elif first[0] not in (owner, _ANCESTOR):
                    raise DatasetError(
                        f"{shown(entry.path)} is the folder {shown(first[1])} again (a symbolic link), so its "
                        f"images would belong to both class {classes[first[0]]!r} and class {classes[owner]!r}; "
                        "remove the link, or copy the images into one class"
                    )
                # else: a loop, or a second link to a folder this class already holds: read it once
        stack.extend(reversed(subdirs))
    # torchvision's order: sorted(os.walk(class folder)) -> folders by path text, then files by name
    out.sort(key=lambda p: (str(p.parent), p.name))
    return out


def _ancestors(folder: Path) -> set[tuple[int, int]]:
    """(device, inode) of the folder and of each of its parents (real and as written)."""
    keys = set()
    try:
        bases = {folder.absolute(), folder.resolve()}
    except (OSError, RuntimeError):  # a loop in the path itself: scanning it reports that
        bases = {folder.absolute()}
    for base in bases:
        for p in (base, *base.parents):
            try:
                keys.add(_dir_key(p))
            except OSError:
                pass
    return keys


def read_folder(folder: Path) -> RawSet:
    folder = Path(folder)
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DatasetError(f"cannot read folder {shown(folder)}; check its permissions")
    entries = _scan(folder)
    kinds = [(e, _check_entry(e)) for e in entries]
    top = [Path(e.path) for e, k in kinds if k == "image"]
    subdirs = [Path(e.path) for e, k in kinds if k == "dir"]
    classes = [d.name for d in subdirs]
    for d in subdirs:
        try:
            d.name.encode("utf-8")
        except UnicodeEncodeError:
            raise DatasetError(f"class folder {shown(d)} has a name that is not valid UTF-8, so it cannot be "
                               "shown or written; rename it (e.g. convmv -f latin1 -t utf8 -r --notest)") from None
    seen: dict = {key: (_ANCESTOR, str(folder)) for key in _ancestors(folder)}
    for i, d in enumerate(subdirs):
        try:
            key = _dir_key(d)
        except OSError as e:
            raise os_error(e, d) from None
        first = seen.get(key)
        if first is not None and first[0] == _ANCESTOR:
            raise DatasetError(f"class folder {shown(d)} is a link back to {shown(os.path.realpath(d))}, which "
                               f"contains {shown(folder)} (a symbolic link loop); remove the link")
        if first is not None:
            raise DatasetError(f"class folders {shown(first[1])} and {shown(d)} are the same folder (a symbolic "
                               "link); remove the link, or copy the images")
        seen[key] = (i, str(d))
    per_class = [_images_under(d, i, classes, seen) for i, d in enumerate(subdirs)]
    if any(per_class):
        if top:
            raise DatasetError(
                f"{shown(folder)} mixes images ({shown(top[0].name)}, ...) with class sub-folders; move the loose "
                "images into a sub-folder, or point at a folder of one kind"
            )
        paths = [p for files in per_class for p in files]
        labels = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(per_class)])
    elif top:
        paths, labels, classes = top, np.full(len(top), -1, dtype=np.int64), None
    else:
        raise DatasetError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {shown(folder)} or its sub-folders; point at a folder "
            "of images or of class sub-folders"
        )
    return RawSet(labels=labels, files=paths, loader=ImageFileLoader(paths), classes=classes)
