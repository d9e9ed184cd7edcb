"""Hostile and broken inputs to the dataset readers: each is refused in one line, or read correctly.

Every hostile file is built here, in tmp_path, and is cheap to make: forged .npy headers are
written by hand, the compressed bomb repeats one fully-flushed deflate block (its CRC computed
with the GF(2) "append zeros" operator, as zlib's crc32_combine does), and the PNG bomb is
written with zlib.
"""

from __future__ import annotations

import errno
import os
import pickle
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ncprobe.data.fingerprint as fpmod
import ncprobe.data.local as local
import ncprobe.data.source_kinds as source_kinds
from ncprobe.data import batch_loader, load_dataset
from ncprobe.data.limits import ENV_MAX_BYTES, default_max_bytes, max_bytes, physical_memory
from ncprobe.errors import DatasetError

GB = 10**9


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def refused(spec: str, *words: str) -> str:
    with pytest.raises(DatasetError) as info:
        ds = load_dataset(spec)
        for i in range(len(ds)):  # item sources fail when an image is read
            ds.image(i)
    msg = one_line(info)
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ---------------------------------------------------------------- building hostile files


def npy_header(shape, descr="|u1", fortran=False) -> bytes:
    """A version 1.0 .npy header, as numpy writes it (padded to a multiple of 64 bytes)."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * (pad % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def write_zip(path: Path, entries) -> None:
    """A plain (non-zip64) archive of ``(name, method, crc, data_as_stored, uncompressed_size)``."""
    out, central = bytearray(), bytearray()
    for name, method, crc, data, size in entries:
        fname = name.encode()
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size,
                           len(fname), 0) + fname + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data),
                               size, len(fname), 0, 0, 0, 0, 0, offset) + fname
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + eocd))


def stored(name: str, data: bytes):
    return (name, 0, zlib.crc32(data), data, len(data))


def labels_member(n: int):
    buf = npy_header((n,), "<i8") + np.zeros(n, np.int64).tobytes()
    return stored("y.npy", buf)


def _gf2_times(mat, vec):
    s, i = 0, 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def crc32_append_zeros(crc: int, n: int) -> int:
    """zlib.crc32(data + bytes(n)) from crc = zlib.crc32(data), in O(log n)."""
    op = [0xEDB88320] + [1 << i for i in range(31)]  # the register update for one zero bit
    for _ in range(3):
        op = [_gf2_times(op, op[k]) for k in range(32)]  # ... for one zero byte
    reg = crc ^ 0xFFFFFFFF
    while n:
        if n & 1:
            reg = _gf2_times(op, reg)
        n >>= 1
        if n:
            op = [_gf2_times(op, op[k]) for k in range(32)]
    return reg ^ 0xFFFFFFFF


def deflated_zeros_member(name: str, shape, descr="|u1", block=3 << 20):
    """A deflated member holding an array of zeros; its data size must be a multiple of block."""
    header = npy_header(shape, descr)
    nbytes = int(np.prod(shape)) * np.dtype(descr).itemsize
    assert nbytes % block == 0
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(header) + co.flush(zlib.Z_FULL_FLUSH)
    one = co.compress(bytes(block)) + co.flush(zlib.Z_FULL_FLUSH)
    data = head + one * (nbytes // block) + co.flush()
    crc = crc32_append_zeros(zlib.crc32(header), nbytes)
    return (name, 8, crc, data, len(header) + nbytes)


def test_bomb_builders_make_valid_archives(tmp_path):
    """The hand-made zips, headers and CRCs are what numpy itself reads (checked on small sizes)."""
    assert crc32_append_zeros(zlib.crc32(b"abc"), 1000) == zlib.crc32(b"abc" + bytes(1000))
    path = tmp_path / "small_bomb.npz"
    write_zip(path, [deflated_zeros_member("x.npy", (2048, 32, 32, 3)), labels_member(2048)])
    with np.load(path) as z:
        assert z["x"].shape == (2048, 32, 32, 3) and not z["x"].any()
    ds = load_dataset(str(path))
    assert ds.images.shape == (2048, 32, 32, 3) and not ds.images.any() and ds.labelled
    raw = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    path = tmp_path / "stored.npz"
    write_zip(path, [stored("x.npy", npy_header(raw.shape) + raw.tobytes()), labels_member(3)])
    with np.load(path) as z:
        np.testing.assert_array_equal(z["x"], raw)
    np.testing.assert_array_equal(load_dataset(str(path)).images[..., 0], raw)


# ---------------------------------------------------------------- 1. resource bombs


@pytest.mark.parametrize("method", [0, 8])
def test_npz_header_declaring_a_terabyte_is_refused_before_allocating(tmp_path, method):
    """(a) 2.5 KB on disk, (10^9, 32, 32, 3) uint8 in the header: 3 TB that numpy would allocate."""
    data = npy_header((10**9, 32, 32, 3)) + bytes(2300)
    x = stored("x.npy", data) if method == 0 else (
        "x.npy", 8, zlib.crc32(data), zlib.compress(data)[2:-4], len(data))
    path = tmp_path / "forged.npz"
    write_zip(path, [x, labels_member(4)])
    assert path.stat().st_size < 3000
    tracemalloc.start()
    try:
        msg = refused(str(path), "[x]", "(1000000000, 32, 32, 3)", "3.07 TB", "truncated or forged", "numpy.savez")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 5 * 2**20
    assert str(path) in msg


def test_npz_label_header_is_checked_too(tmp_path):
    raw = np.zeros((4, 2, 2, 3), np.uint8)
    path = tmp_path / "y_forged.npz"
    write_zip(path, [stored("x.npy", npy_header(raw.shape) + raw.tobytes()),
                     stored("y.npy", npy_header((10**12,), "<i8") + bytes(32))])
    refused(str(path), "[y]", "(1000000000000,)", "truncated or forged")


def test_npz_compressed_bomb_is_refused_from_its_declared_size(tmp_path, monkeypatch):
    """(b) 3.5 MB of deflate that inflates to 3.6 GB: refused from ZipInfo.file_size, nothing inflated."""
    path = tmp_path / "bomb.npz"
    n = 1144 * 1024  # 1144 blocks of 3 MiB: 3.6 GB of zeros
    write_zip(path, [deflated_zeros_member("x.npy", (n, 32, 32, 3)),
                     deflated_zeros_member("y.npy", (n,), "|u1", block=1024)])
    assert path.stat().st_size < 4 * 2**20
    monkeypatch.setenv(ENV_MAX_BYTES, "1G")
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        msg = refused(str(path), "3.6 GB", "budget", ENV_MAX_BYTES, "uncompressed with numpy.savez")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 * 2**20 and time.perf_counter() - t0 < 5
    assert str(path) in msg


def test_npz_compressed_over_budget_but_mapped_one_loads(tmp_path, monkeypatch):
    x = np.zeros((64, 64, 64, 3), np.uint8)  # 786 KB
    y = np.arange(64) % 3
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    np.savez(tmp_path / "s.npz", x=x, y=y)
    monkeypatch.setenv(ENV_MAX_BYTES, "100K")
    refused(str(tmp_path / "c.npz"), "786 KB", "budget", "savez_compressed")
    refused(str(tmp_path / "s.npz"), "786 KB", "budget")  # under MMAP_MIN_BYTES it is read, so it counts
    monkeypatch.setattr(local, "MMAP_MIN_BYTES", 0)
    ds = load_dataset(str(tmp_path / "s.npz"))  # memory-mapped: does not count against the budget
    np.testing.assert_array_equal(ds.images, x)
    # a layout that must be converted (NCHW) is a copy, so it counts
    np.savez(tmp_path / "nchw.npz", x=x.transpose(0, 3, 1, 2).copy(), y=y)
    refused(str(tmp_path / "nchw.npz"), "budget", "store the images as uint8 (N, H, W, C)")
    monkeypatch.setenv(ENV_MAX_BYTES, "1M")
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "nchw.npz")).images, x)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "c.npz")).images, x)


def test_npz_lying_central_directory_size_is_refused(tmp_path, monkeypatch):
    """A deflated member whose stated size (4.29 GB) agrees with its forged .npy header but not with its
    data (64 MB of zeros): the budget refuses it before the short data (and its CRC) are ever reached."""
    size = 0xFFFF0000
    header = npy_header((size - 128, 1, 1))
    assert len(header) == 128
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = co.compress(header) + co.flush(zlib.Z_FULL_FLUSH)
    data += (co.compress(bytes(1 << 20)) + co.flush(zlib.Z_FULL_FLUSH)) * 64 + co.flush()
    path = tmp_path / "liar.npz"
    write_zip(path, [("x.npy", 8, 0, data, size), labels_member(4)])
    monkeypatch.setenv(ENV_MAX_BYTES, "1G")
    refused(str(path), "[x] 4.29 GB", "budget")


def test_uncompressed_npz_is_memory_mapped_not_read(tmp_path, monkeypatch):
    """(c) numpy.savez members are mapped from the file: loading a 24 MB set allocates next to nothing.
    (MMAP_MIN_BYTES, 64 MiB, is lowered to 1 MiB here to keep the file small.)"""
    monkeypatch.setattr(local, "MMAP_MIN_BYTES", 2**20)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2000, 64, 64, 3), dtype=np.uint8)
    y = np.arange(2000) % 7
    path = tmp_path / "big.npz"
    np.savez(path, x=x, y=y)
    tracemalloc.start()
    try:
        ds = load_dataset(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak  # the labels, a hash buffer: not the 24.6 MB of pixels
    assert not ds.images.flags.owndata and not ds.images.flags.writeable
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, y)
    xb, yb = next(iter(batch_loader(ds, 16, shuffle=True, seed=1)))
    assert xb.shape == (16, 3, 64, 64)
    sub = load_dataset(f"{path}@n=10")  # a selection is copied into memory
    assert sub.images.flags.owndata and len(sub) == 10
    grey = tmp_path / "grey.npz"  # (N, H, W) is mapped too
    np.savez(grey, x=x[..., 0].copy(), y=y)
    g = load_dataset(str(grey))
    assert not g.images.flags.owndata and g.images.shape == (2000, 64, 64, 1)
    np.testing.assert_array_equal(g.images[..., 0], x[..., 0])
    np.savez(tmp_path / "small.npz", x=x[:10], y=y[:10])  # under MMAP_MIN_BYTES: read, as numpy reads it
    assert load_dataset(str(tmp_path / "small.npz")).images.flags.writeable
    # a mapped member is still checked against the archive's CRC-32, as a read through zipfile is
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "rot.npz").write_bytes(bytes(data))
    refused(str(tmp_path / "rot.npz"), "[x]", "CRC-32", "damaged")


def test_float_npz_is_converted_a_slice_at_a_time(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.random((2000, 32, 32, 3), dtype=np.float32)  # 24.6 MB, uint8 result 6.1 MB
    np.savez(tmp_path / "f.npz", x=x, y=np.zeros(2000, int))
    monkeypatch.setattr(local, "_CHUNK_BYTES", 256 * 1024)
    monkeypatch.setattr(local, "MMAP_MIN_BYTES", 2**20)
    tracemalloc.start()
    try:
        ds = load_dataset(str(tmp_path / "f.npz"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, peak  # the 6.1 MB result and one slice; reading whole took 3 float copies (74 MB)
    np.testing.assert_array_equal(ds.images, np.rint(x * 255.0).astype(np.uint8))  # as before: float32 math
    # Fortran order, big-endian, NCHW and int16 arrays read like numpy reads them
    for arr in (np.asfortranarray(x), x.astype(">f4"), x.transpose(0, 3, 1, 2).copy()):
        np.savez(tmp_path / "v.npz", x=arr, y=np.zeros(2000, int))
        np.testing.assert_array_equal(load_dataset(str(tmp_path / "v.npz")).images, ds.images)
    ints = rng.integers(0, 256, size=(50, 4, 4, 3)).astype(np.int16)
    np.savez(tmp_path / "i.npz", x=ints, y=np.zeros(50, int))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "i.npz")).images, ints.astype(np.uint8))


def test_memory_budget_variable(monkeypatch):
    monkeypatch.delenv(ENV_MAX_BYTES, raising=False)
    ram = physical_memory()
    assert max_bytes() == default_max_bytes() == (ram // 2 if ram else 8 * 2**30)
    for text, value in (("8G", 8 * 2**30), ("512MiB", 512 * 2**20), ("1.5g", int(1.5 * 2**30)),
                        ("8e9", 8 * GB), ("12345", 12345), ("2 TB", 2 * 2**40)):
        monkeypatch.setenv(ENV_MAX_BYTES, text)
        assert max_bytes() == value, text
    for bad in ("lots", "-1", "0", "8X"):
        monkeypatch.setenv(ENV_MAX_BYTES, bad)
        with pytest.raises(DatasetError) as info:
            max_bytes()
        assert ENV_MAX_BYTES in one_line(info) and "8G" in one_line(info)


def png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of zeros, deflated row by row (a 20000x20000 one is about 48 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    co = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = b"".join(co.compress(row * 500) for _ in range(height // 500)) + co.compress(row * (height % 500))
    idat += co.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_decompression_bomb_in_a_folder(tmp_path):
    """(d) a 48 KB 20000x20000 PNG: Pillow's DecompressionBombError used to escape as a traceback."""
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(root / "a" / "ok.png")
    bomb = root / "b" / "bomb.png"
    bomb.write_bytes(png_bytes(20000, 20000))
    assert bomb.stat().st_size < 60_000
    ds = load_dataset(str(root))
    assert ds.image(0).shape == (8, 8, 3)
    with pytest.raises(DatasetError) as info:
        ds.image(1)
    msg = one_line(info)
    assert str(bomb) in msg and "400 Mpx" in msg and "more than the 89 Mpx" in msg and "remove it" in msg
    with pytest.raises(DatasetError) as info:
        for _ in batch_loader(ds, 2, size=8):
            pass
    assert str(bomb) in one_line(info)


def test_png_in_pillow_warning_range_is_refused_without_a_warning(tmp_path):
    """10000x10000 is past Pillow's limit but under twice it: Pillow only warns, then decodes 100 Mpx."""
    root = tmp_path / "flat"
    root.mkdir()
    (root / "big.png").write_bytes(png_bytes(10000, 10000))
    ds = load_dataset(str(root))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DatasetError) as info:
            ds.image(0)
    assert "10000x10000" in one_line(info) and "big.png" in one_line(info)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    (root / "big.png").write_bytes(png_bytes(300, 200))  # a valid PNG below the limit still loads
    assert ds.image(0).shape == (200, 300, 3)


def test_broken_image_files_are_one_line(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    good = png_bytes(40, 30)
    (root / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "garbage.jpg").write_bytes(os.urandom(300))
    (root / "empty.gif").write_bytes(b"")
    ds = load_dataset(str(root))
    for i in range(len(ds)):
        with pytest.raises(DatasetError) as info:
            ds.image(i)
        assert "cannot read image" in one_line(info) and "remove or replace" in one_line(info)


# ---------------------------------------------------------------- 2. fingerprints


def _restore_mtime_until_ctime_moves(path: Path, st0: os.stat_result) -> None:
    """Set the mtime back; wait out the file system's clock tick so that the ctime visibly moved."""
    for _ in range(200):
        os.utime(path, ns=(st0.st_atime_ns, st0.st_mtime_ns))
        if path.stat().st_ctime_ns != st0.st_ctime_ns:
            return
        time.sleep(0.01)
    pytest.skip("the file system does not keep a ctime")


def test_large_npz_with_labels_changed_and_mtime_restored_gets_a_new_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setattr(fpmod, "HASH_LIMIT", 16)  # every file counts as large: stat fingerprint
    x = np.zeros((10, 4, 4, 3), np.uint8)
    path = tmp_path / "big.npz"
    np.savez(path, x=x, y=np.arange(10) % 2)
    st0 = path.stat()
    fp0 = load_dataset(str(path)).fingerprint
    np.savez(path, x=x, y=(np.arange(10) + 1) % 2)  # same size, other labels
    _restore_mtime_until_ctime_moves(path, st0)
    st1 = path.stat()
    assert (st1.st_size, st1.st_mtime_ns) == (st0.st_size, st0.st_mtime_ns)
    ds = load_dataset(str(path))
    assert ds.fingerprint != fp0
    np.testing.assert_array_equal(ds.labels, (np.arange(10) + 1) % 2)
    fp1 = ds.fingerprint
    # replaced by another file (another inode) with size and mtime restored
    other = tmp_path / "other.npz"
    np.savez(other, x=x, y=np.arange(10) % 2)
    os.utime(other, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    os.replace(other, path)
    assert load_dataset(str(path)).fingerprint not in (fp0, fp1)


def test_small_file_hash_cache_sees_a_rewrite_with_mtime_restored(tmp_path):
    """The per-process hash cache was keyed on size + mtime: a same-size rewrite kept the old hash."""
    path = tmp_path / "small.npz"
    x = np.zeros((10, 4, 4, 3), np.uint8)
    np.savez(path, x=x, y=np.arange(10) % 2)
    st0 = path.stat()
    fp0 = load_dataset(str(path)).fingerprint
    np.savez(path, x=x, y=(np.arange(10) + 1) % 2)
    _restore_mtime_until_ctime_moves(path, st0)
    assert load_dataset(str(path)).fingerprint != fp0


def test_image_folder_rewritten_with_mtime_restored_gets_a_new_fingerprint(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    img = root / "a" / "0.bmp"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img)
    st0 = img.stat()
    fp0 = load_dataset(str(root)).fingerprint
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(img)  # BMP: same size, other pixels
    _restore_mtime_until_ctime_moves(img, st0)
    assert img.stat().st_size == st0.st_size
    assert load_dataset(str(root)).fingerprint != fp0


def test_fingerprint_docstring_says_what_it_covers():
    doc = fpmod.__doc__
    assert "inode" in doc and "ctime" in doc and "sha256" in doc


# ---------------------------------------------------------------- 3. symbolic link loops


def _img(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


def test_self_loop_inside_a_class_counts_each_image_once(tmp_path):
    root = tmp_path / "imgs"
    _img(root / "a" / "0.png")
    _img(root / "a" / "1.png")
    _img(root / "b" / "0.png")
    os.symlink(root / "a", root / "a" / "again")  # a -> a: was read 41 times
    os.symlink("..", root / "b" / "sub_loop")  # b/sub_loop -> root: was a hang
    ds = load_dataset(str(root))
    assert ds.classes == ["a", "b"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 1])


def test_link_to_the_parent_or_above_is_not_walked(tmp_path):
    root = tmp_path / "sets" / "imgs"
    _img(root / "a" / "0.png")
    _img(tmp_path / "sets" / "other" / "x.png")  # outside the folder: must not be counted
    os.symlink(tmp_path / "sets", root / "a" / "up")
    os.symlink("/", root / "a" / "slash")
    ds = load_dataset(str(root))
    np.testing.assert_array_equal(ds.labels, [0])


def test_linked_folders_are_followed_once(tmp_path):
    outside = tmp_path / "elsewhere"
    _img(outside / "0.png")
    _img(outside / "1.png")
    root = tmp_path / "imgs"
    _img(root / "a" / "own.png")
    os.symlink(outside, root / "a" / "l1")
    os.symlink(outside, root / "a" / "l2")  # the same folder twice in one class: read once
    os.symlink(outside, root / "b")  # a class folder that is a link: fine
    with pytest.raises(DatasetError) as info:
        load_dataset(str(root))  # ... but now elsewhere belongs to classes a and b
    msg = one_line(info)
    assert "class 'a'" in msg and "class 'b'" in msg and "remove the link" in msg
    os.unlink(root / "b")
    ds = load_dataset(str(root))
    assert len(ds) == 3 and ds.classes == ["a"]
    os.unlink(root / "a" / "l1")
    os.unlink(root / "a" / "l2")
    os.symlink(outside, root / "b")
    ds = load_dataset(str(root))
    np.testing.assert_array_equal(ds.labels, [0, 1, 1])


def test_class_folder_that_loops_or_duplicates_is_refused(tmp_path):
    root = tmp_path / "imgs"
    _img(root / "a" / "0.png")
    os.symlink(root, root / "loop")
    refused(str(root), "loop", "symbolic link loop", "remove the link")
    os.unlink(root / "loop")
    os.symlink(root / "a", root / "b")
    refused(str(root), "are the same folder", "remove the link")


def test_broken_links_and_special_files_are_named(tmp_path):
    root = tmp_path / "imgs"
    _img(root / "a" / "0.png")
    os.symlink(tmp_path / "gone", root / "lost_class")
    refused(str(root), "lost_class", "broken symbolic link", "remove it")
    os.unlink(root / "lost_class")
    os.mkfifo(root / "a" / "pipe.png")  # opening it would block forever
    refused(str(root), "pipe.png", "not a regular file")


# ---------------------------------------------------------------- 4. labels


@pytest.mark.parametrize("y, shown", [
    (np.array([0, 1, 2**64 - 1], np.uint64), "18446744073709551615"),
    (np.array([0, 1, 2**63], np.uint64), "9223372036854775808"),
    (np.array([0, 1, 10**12], np.int64), "1000000000000"),
    (np.array([0, 1, 1e30]), "1e+30"),
    (np.array([0, 1, 2**62], np.int64), "4611686018427387904"),
])
def test_labels_that_are_not_class_ids_are_refused(tmp_path, y, shown):
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((3, 4, 4, 3), np.uint8), y=y)
    msg = refused(str(path), "[y]", shown, "renumber the classes")
    assert "no labels" not in msg


def test_negative_labels_and_the_unknown_convention(tmp_path):
    x = np.zeros((3, 4, 4, 3), np.uint8)
    np.savez(tmp_path / "neg.npz", x=x, y=np.array([0, -5, 1]))
    refused(str(tmp_path / "neg.npz"), "found -5", "-1 for unknown")
    np.savez(tmp_path / "negf.npz", x=x, y=np.array([0, -1e20, 1]))
    refused(str(tmp_path / "negf.npz"), "found -1e+20")
    np.savez(tmp_path / "unk.npz", x=x, y=np.array([-1, -1, -1], np.int8))
    assert not load_dataset(str(tmp_path / "unk.npz")).labelled
    np.savez(tmp_path / "u64.npz", x=x, y=np.array([0, 3, 1], np.uint64))
    ds = load_dataset(str(tmp_path / "u64.npz"))
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 3, 1] and ds.num_classes == 4


# ---------------------------------------------------------------- 5. files that are not .npz archives


def test_not_a_zip_is_one_line(tmp_path):
    np.save(tmp_path / "single.npy", np.zeros((3, 4, 4, 3), np.uint8))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    refused(str(tmp_path / "single.npz"), "is not a .npz archive (it holds a single .npy array)",
            "save it with numpy.savez(x=..., y=...)")
    (tmp_path / "random.npz").write_bytes(os.urandom(4096).replace(b"PK", b"pk"))
    refused(str(tmp_path / "random.npz"), "is not a .npz archive (it is not a zip file)", "numpy.savez(x=..., y=...)")
    (tmp_path / "empty.npz").write_bytes(b"")
    refused(str(tmp_path / "empty.npz"), "(the file is empty)")
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"x": [1, 2]}))
    refused(str(tmp_path / "pickle.npz"), "pickle, which ncprobe never loads")
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 4, 4, 3), np.uint8), y=np.zeros(3, int))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    refused(str(tmp_path / "cut.npz"), "is not a .npz archive (a damaged zip file", "numpy.savez")
    flipped = bytearray(data)
    flipped[200] ^= 0xFF  # inside x's data: the CRC no longer matches
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    refused(str(tmp_path / "flipped.npz"), "[x]", "damaged", "CRC-32")
    np.savez_compressed(tmp_path / "okc.npz", x=np.arange(3 * 48, dtype=np.uint8).reshape(3, 4, 4, 3),
                        y=np.zeros(3, int))
    data = bytearray((tmp_path / "okc.npz").read_bytes())
    data[120] ^= 0xFF
    (tmp_path / "flippedc.npz").write_bytes(bytes(data))
    refused(str(tmp_path / "flippedc.npz"), "damaged")


class _Marker:
    """Unpickling this would create a file: it must never happen."""

    target = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    _Marker.target = str(marker)
    objs = np.empty(3, dtype=object)
    objs[:] = [_Marker(), _Marker(), _Marker()]
    for key in ("x", "y", "classes"):
        arrays = {"x": np.zeros((3, 4, 4, 3), np.uint8), "y": np.zeros(3, int), key: objs}
        np.savez(tmp_path / "obj.npz", allow_pickle=True, **arrays)
        refused(str(tmp_path / "obj.npz"), f"[{key}]", "never unpickles")
    assert not marker.exists()


def test_odd_archives(tmp_path):
    x = np.zeros((3, 4, 4, 3), np.uint8)
    member = stored("x.npy", npy_header(x.shape) + x.tobytes())
    write_zip(tmp_path / "dup.npz", [member, member, labels_member(3)])
    refused(str(tmp_path / "dup.npz"), "two members named 'x'")
    write_zip(tmp_path / "raw.npz", [stored("x.npy", b"not an array at all"), labels_member(3)])
    refused(str(tmp_path / "raw.npz"), "[x] is not a numpy array")
    bad = npy_header(x.shape).replace(b"'|u1'", b"'zz9'")
    write_zip(tmp_path / "descr.npz", [stored("x.npy", bad + x.tobytes()), labels_member(3)])
    refused(str(tmp_path / "descr.npz"), "header is not valid")
    write_zip(tmp_path / "huge_header.npz", [stored("x.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31)),
                                             labels_member(3)])
    refused(str(tmp_path / "huge_header.npz"), "declares 2147483648 bytes")
    np.savez(tmp_path / "structured.npz", x=np.zeros(3, dtype=[("a", "u1")]), y=np.zeros(3, int))
    refused(str(tmp_path / "structured.npz"), "store (N, H, W, C)")
    flat = npy_header((1, 10**18, 0, 3))  # no bytes at all, yet a 10^18-pixel-high image
    write_zip(tmp_path / "nopix.npz", [stored("x.npy", flat), labels_member(1)])
    refused(str(tmp_path / "nopix.npz"), "have no pixels")
    np.savez(tmp_path / "cplx.npz", x=np.zeros((3, 4, 4, 3), np.complex64), y=np.zeros(3, int))
    refused(str(tmp_path / "cplx.npz"), "dtype complex64")


# ---------------------------------------------------------------- 6. operating-system errors


def test_npz_that_disappears_while_being_read(tmp_path, monkeypatch):
    path = tmp_path / "vanish.npz"
    np.savez(path, x=np.zeros((3, 4, 4, 3), np.uint8), y=np.zeros(3, int))
    real = source_kinds.read_npz

    def vanish(p, **kw):
        os.unlink(p)
        return real(p, **kw)

    monkeypatch.setattr(source_kinds, "read_npz", vanish)
    refused(str(path), str(path), "No such file or directory", "disappeared")


def test_permission_denied_on_a_file_and_a_folder(tmp_path, monkeypatch):
    path = tmp_path / "locked.npz"
    np.savez(path, x=np.zeros((3, 4, 4, 3), np.uint8), y=np.zeros(3, int))
    root = tmp_path / "imgs"
    _img(root / "a" / "0.png")
    _img(root / "b" / "sub" / "0.png")
    real_open, real_scandir = open, os.scandir

    def deny_open(file, *args, **kw):
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    def deny_scandir(p="."):
        if str(p) == str(root / "b" / "sub"):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_scandir(p)

    monkeypatch.setattr(local, "open", deny_open, raising=False)
    monkeypatch.setattr(fpmod, "open", deny_open, raising=False)
    monkeypatch.setattr(local.os, "scandir", deny_scandir)
    refused(str(path), f"{path}: Permission denied", "check its permissions")
    # an unreadable class sub-folder was skipped silently by os.walk: a class lost its images
    refused(str(root), f"{root / 'b' / 'sub'}: Permission denied", "check its permissions")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_permission_denied_for_real(tmp_path):
    path = tmp_path / "locked.npz"
    np.savez(path, x=np.zeros((3, 4, 4, 3), np.uint8), y=np.zeros(3, int))
    path.chmod(0)
    root = tmp_path / "imgs"
    _img(root / "a" / "0.png")
    _img(root / "b" / "sub" / "0.png")
    (root / "b" / "sub").chmod(0)
    try:
        refused(str(path), "Permission denied", "check its permissions")
        refused(str(root), "Permission denied", "check its permissions")
    finally:
        path.chmod(0o600)
        (root / "b" / "sub").chmod(0o700)


def test_stat_errors_while_resolving_the_path(tmp_path, monkeypatch):
    import pathlib

    target = tmp_path / "hidden" / "set.npz"
    real = pathlib.Path.is_dir

    def is_dir(self):
        if str(self) == str(target):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "is_dir", is_dir)
    refused(str(target), f"{target}: Permission denied", "check its permissions")
    with pytest.raises(DatasetError) as info:
        source_kinds.fit_spec_for(str(target))
    assert "Permission denied" in one_line(info)


def test_image_that_disappears_after_loading(tmp_path):
    root = tmp_path / "flat"
    _img(root / "0.png")
    ds = load_dataset(str(root))
    os.unlink(root / "0.png")
    with pytest.raises(DatasetError) as info:
        ds.image(0)
    assert "0.png" in one_line(info) and "No such file" in one_line(info)


def test_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "imgs"
    _img(root / "a" / "0.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(os.fsdecode(os.fsencode(root / "a") + b"/caf\xe9.png"))
    ds = load_dataset(str(root))  # an image file name is only a path: it loads
    assert len(ds) == 2 and ds.image(1).shape == (4, 4, 3)
    os.unlink(os.fsdecode(os.fsencode(root / "a") + b"/caf\xe9.png"))
    bad_class = os.fsdecode(os.fsencode(root) + b"/caf\xe9")
    _img(Path(bad_class) / "0.png")  # a class name ends up in reports: refused
    msg = refused(str(root), "not valid UTF-8", "rename it", "caf\\xe9")
    msg.encode("utf-8")  # the message itself can be printed and written
    bad_root = os.fsdecode(os.fsencode(tmp_path) + b"/d\xfcnn")
    _img(Path(bad_root) / "0.png")
    refused(bad_root, "not valid UTF-8", "rename it").encode("utf-8")


def test_clean_inputs_still_read_the_same(tmp_path):
    """The hardened readers keep the documented behaviour on ordinary files."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(20, 6, 6, 3), dtype=np.uint8)
    y = np.arange(20) % 4
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "s.npz", images=x, labels=y.astype(np.uint8), classes=np.array([b"a", b"b", b"c", b"d"]))
        ds = load_dataset(str(tmp_path / "s.npz"))
        np.testing.assert_array_equal(ds.images, x)
        np.testing.assert_array_equal(ds.labels, y)
        assert ds.classes == ["a", "b", "c", "d"]
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 4, 4, 3), np.uint8), y=np.zeros(0, int))
    refused(str(tmp_path / "e.npz"), "holds no images")
