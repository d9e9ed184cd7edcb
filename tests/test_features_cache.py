"""The feature cache against hostile disks: stale architecture code, damaged entries, odd locations,
file modes, leftovers of killed runs, and readers racing writers. Every hostile input is made in tmp_path."""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ncprobe.features import cache as fc
from ncprobe.features import extract_features
from ncprobe.features.extract import architecture_fingerprint, code_tree_digest
from ncprobe.features.featureset import FeatureSet
from tests.helpers import TinyNet, make_checkpoint, make_source

KEY = "0123456789abcdef0123456789abcdef"


def _permissions_enforced(tmp_path: Path) -> bool:
    """False for root (or anyone with CAP_DAC_OVERRIDE), who reads and writes past the mode bits."""
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o500)
    try:
        (probe / "x").write_text("")
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
        shutil.rmtree(probe)


def _features(n=12, seed=0, layers=("stage1", "penultimate", "logits")) -> FeatureSet:
    rng = np.random.default_rng(seed)
    feats = {layer: rng.standard_normal((n, 3 + i)).astype(np.float32) for i, layer in enumerate(layers)}
    return FeatureSet(name="toy", layers=list(layers), features=feats, labels=np.arange(n, dtype=np.int64) % 4,
                      meta={"dataset": "toy", "seconds": 0.5})


def _same(a: FeatureSet, b: FeatureSet) -> bool:
    return (a.layers == b.layers and np.array_equal(a.labels, b.labels)
            and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a.layers))


def _quiet_lookup(cache_dir, key=KEY):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, state = fc.lookup(cache_dir, key, "toy")
    for w in caught:
        assert "\n" not in str(w.message)
    return got, state, caught


# ---------------------------------------------------------------- 1. the architecture's code is in the key

_NET_V1 = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))
"""
_NET_V2 = _NET_V1.replace("return self.fc(", "return -self.fc(")  # the same weights, the opposite prediction


def _user_arch_setup(tmp_path: Path):
    (tmp_path / "mynet.py").write_text(_NET_V1)
    spec = importlib.util.spec_from_file_location("mynet_setup", tmp_path / "mynet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.Net()
    with torch.no_grad():
        net.fc.weight.mul_(0.01)
        net.fc.bias.copy_(torch.tensor([0.0, 0.0, 10.0, 0.0]))  # v1 always says class 2, v2 never does
    torch.save(net.state_dict(), tmp_path / "w.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), y=np.full(16, 2))


def _eval(tmp_path: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("NCPROBE_CACHE", None)
    res = subprocess.run([sys.executable, "-m", "ncprobe", "eval", "w.pt", "--arch", "mynet.py:Net", "--data", "d.npz",
                          "--cache", "cache", "-q", "--device", "cpu"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_edited_user_architecture_file_gives_new_forward_pass(tmp_path):
    _user_arch_setup(tmp_path)
    assert _eval(tmp_path) == "accuracy: 1.0000"
    entries = len(list((tmp_path / "cache").glob("*.npz")))  # one per probed layer
    assert entries >= 1
    (tmp_path / "mynet.py").write_text(_NET_V2)  # edit the forward between two runs
    assert _eval(tmp_path) == "accuracy: 0.0000"  # the new numbers, not the cached 1.0
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 * entries  # a new forward pass, new entries


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_architecture_fingerprint_follows_file_and_loaded_code(tmp_path, monkeypatch):
    path = tmp_path / "mynet.py"
    path.write_text(_NET_V1)
    arch = f"{path}:Net"
    old = _load_module(path, "ncprobe_test_mynet_old")
    monkeypatch.setitem(sys.modules, "ncprobe_test_mynet_old", old)

    def fingerprint(mod):
        ckpt = make_checkpoint(mod.Net(), "fc", ["conv"])
        ckpt.arch = arch
        return architecture_fingerprint(ckpt)

    v1 = fingerprint(old)
    assert v1 == fingerprint(old)  # stable
    assert set(v1["versions"]) >= {"python", "torch", "torchvision", "timm", "ncprobe"}
    assert v1["arch"] == arch and len(v1["ncprobe_code"]) == 64
    path.write_text(_NET_V2)
    stale = fingerprint(old)  # the file changed on disk, the process still runs the old class (a notebook)
    fresh = _load_module(path, "ncprobe_test_mynet_fresh")
    monkeypatch.setitem(sys.modules, "ncprobe_test_mynet_fresh", fresh)
    new = fingerprint(fresh)
    assert len({_key(v1), _key(stale), _key(new)}) == 3  # old code never files under the new code's key
    # a comment changes the file hash only; the same loaded code keys the same
    path.write_text(_NET_V2 + "\n# a comment\n")
    assert fingerprint(fresh)["loaded_code"] == new["loaded_code"] and fingerprint(fresh)["files"] != new["files"]


def _key(arch_fp):
    return fc.cache_key("ck", "ds", {"size": [8, 8]}, ["logits"], "pool:mean", architecture=arch_fp)


def test_architecture_fingerprint_of_a_module_name(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg_ncprobe_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(_NET_V1)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("userpkg_ncprobe_test.nets")
    ckpt = make_checkpoint(mod.Net(), "fc", ["conv"])
    ckpt.arch = "userpkg_ncprobe_test.nets:Net"
    before = architecture_fingerprint(ckpt)
    (pkg / "nets.py").write_text(_NET_V1 + "\nSCALE = 3\n")
    assert architecture_fingerprint(ckpt)["files"] != before["files"]
    for name in ("userpkg_ncprobe_test.nets", "userpkg_ncprobe_test"):
        monkeypatch.delitem(sys.modules, name)


def test_ncprobe_code_digest_covers_architecture_code(tmp_path):
    root = tmp_path / "ncprobe"
    (root / "models" / "families").mkdir(parents=True)
    (root / "report").mkdir()
    (root / "models" / "families" / "net.py").write_text("A = 1\n")
    (root / "report" / "plot.py").write_text("B = 1\n")
    base = code_tree_digest(root)
    (root / "report" / "plot.py").write_text("B = 2\n")
    assert code_tree_digest(root) == base  # not architecture code
    (root / "models" / "families" / "net.py").write_text("A = 2\n")
    assert code_tree_digest(root) != base


def test_arch_name_and_head_invalidate(tmp_path):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1"], sha="a" * 64)
    src = make_source(n=8)
    assert not extract_features(ckpt, src, cache_dir=tmp_path, progress=False).from_cache
    assert extract_features(ckpt, src, cache_dir=tmp_path, progress=False).from_cache
    ckpt.arch = "timm:resnet10t"
    assert not extract_features(ckpt, src, cache_dir=tmp_path, progress=False).from_cache


# ---------------------------------------------------------------- 2. damaged entries mean "rebuild", never a crash


def _entry(tmp_path: Path) -> tuple[Path, bytes, FeatureSet]:
    fs = _features(n=6)
    path = fc.save(tmp_path, KEY, fs)
    return path, path.read_bytes(), fs


def test_bit_flip_fuzz(tmp_path):
    path, good, fs = _entry(tmp_path)
    rng = np.random.default_rng(1234)
    n_bits = len(good) * 8
    positions = rng.choice(n_bits, size=min(3000, n_bits), replace=False)
    outcomes = {fc.HIT: 0, fc.DAMAGED: 0}
    for bit in positions:
        data = bytearray(good)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        got, state, caught = _quiet_lookup(tmp_path)
        assert state in outcomes, (bit, state)
        outcomes[state] += 1
        if state == fc.HIT:
            assert _same(got, fs), f"bit {bit} served different features"
        else:
            assert got is None and not path.exists()  # removed, to be rebuilt
            assert any("damaged" in str(w.message) for w in caught)
    assert outcomes[fc.DAMAGED] > len(positions) // 2
    path.write_bytes(good)
    got, state, _ = _quiet_lookup(tmp_path)
    assert state == fc.HIT and _same(got, fs)


def _patch_zip_headers(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Patch a field at ``offset`` from every local (PK\\3\\4) and central (PK\\1\\2) header."""
    out = bytearray(data)
    for sig, off in ((b"PK\x03\x04", offset), (b"PK\x01\x02", offset + 2)):
        i = out.find(sig)
        while i >= 0:
            struct.pack_into(fmt, out, i + off, value)
            i = out.find(sig, i + 4)
    return bytes(out)


def _huge_header_entry(path: Path) -> None:
    """A well-formed zip whose feature array claims 10^12 x 10^6 floats."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1000000), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64
    info = f'{{"format": {fc.FORMAT_VERSION}, "key": "{KEY}", "layers": ["logits"], "meta": {{}}}}'
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("info.json", info)
        zf.writestr("labels.npy", npy)
        zf.writestr("f0.npy", npy)
        zf.writestr("digest", "0" * 64)


@pytest.mark.parametrize("case", ["encrypted", "deflate", "bzip2", "lzma", "unknown-method", "truncated", "empty",
                                  "garbage", "huge-shape", "pickle", "wrong-key", "symlink-loop", "fifo"])
def test_hostile_entries_are_rebuilt(tmp_path, case):
    path, good, fs = _entry(tmp_path)
    if case == "encrypted":
        path.write_bytes(_patch_zip_headers(good, 6, "<H", 0x1))
    elif case in ("deflate", "bzip2", "lzma", "unknown-method"):
        method = {"deflate": 8, "bzip2": 12, "lzma": 14, "unknown-method": 99}[case]
        path.write_bytes(_patch_zip_headers(good, 8, "<H", method))
    elif case == "truncated":
        for cut in range(0, len(good), 97):
            path.write_bytes(good[:cut])
            assert _quiet_lookup(tmp_path)[1] == fc.DAMAGED
        path.write_bytes(good[: len(good) - 1])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case == "huge-shape":
        _huge_header_entry(path)
    elif case == "pickle":
        np.savez(path, __info__=np.array([{"key": KEY}], dtype=object), allow_pickle=True)
    elif case == "wrong-key":
        fc.save(tmp_path, "f" * 32, fs)
        os.replace(tmp_path / ("f" * 32 + ".npz"), path)
    elif case == "symlink-loop":
        path.unlink()
        os.symlink(path.name, path)
    elif case == "fifo":
        path.unlink()
        os.mkfifo(path)  # opening it must not block
    got, state, caught = _quiet_lookup(tmp_path)
    assert got is None and state == fc.DAMAGED
    assert any("damaged" in str(w.message) for w in caught)
    # and a run rebuilds and replaces it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fc.save(tmp_path, KEY, fs) == path
    got, state, _ = _quiet_lookup(tmp_path)
    assert state == fc.HIT and _same(got, fs)


def test_entry_that_is_a_directory_is_left_alone(tmp_path):
    fs = _features()
    (tmp_path / f"{KEY}.npz").mkdir()
    (tmp_path / f"{KEY}.npz" / "keep").write_text("x")
    got, state, _ = _quiet_lookup(tmp_path)
    assert state == fc.DAMAGED
    with pytest.warns(UserWarning, match="cannot write the feature cache"):
        assert fc.save(tmp_path, KEY, fs) is None
    assert (tmp_path / f"{KEY}.npz" / "keep").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_damaged_entry_is_rebuilt_by_extract(tmp_path):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1"], sha="c" * 64)
    src = make_source(n=8)
    first = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    entry = sorted(tmp_path.glob("*.npz"))[0]  # one layer's entry
    _patch = _patch_zip_headers(entry.read_bytes(), 6, "<H", 0x1)  # the "encrypted" flag bit
    entry.write_bytes(_patch)
    with pytest.warns(UserWarning, match="damaged"):
        again = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    assert not again.from_cache and _same(first, again)
    third = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    assert third.from_cache and _same(first, third)


# ---------------------------------------------------------------- 3. unwritable or odd cache locations


def _run_tiny(cache_dir, **kw):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1"], sha="d" * 64)
    return extract_features(ckpt, make_source(n=8), cache_dir=cache_dir, progress=False, **kw)


def test_cache_env_names_a_file(tmp_path, monkeypatch):
    target = tmp_path / "not-a-dir"
    target.write_text("precious")
    monkeypatch.setenv("NCPROBE_CACHE", str(target))
    with pytest.warns(UserWarning, match=r"cannot write the feature cache in .*not a directory.*without caching") as rec:
        fs = _run_tiny(None)
    assert not fs.from_cache and len(fs) == 8
    assert all("\n" not in str(w.message) for w in rec)
    assert target.read_text() == "precious"


def test_cache_dir_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="cannot write the feature cache"):
        fs = _run_tiny(blocker / "sub" / "cache")  # even root cannot create this
    assert not fs.from_cache
    assert blocker.read_text() == "x"


def test_read_only_cache_dir(tmp_path):
    if not _permissions_enforced(tmp_path):
        pytest.skip("running as root: directory permissions are not enforced")
    cache = tmp_path / "cache"
    _run_tiny(cache)  # one readable entry
    cache.chmod(0o555)
    try:
        assert _run_tiny(cache).from_cache  # reading still works
        with pytest.warns(UserWarning, match="cannot write the feature cache.*Permission denied"):
            fs = _run_tiny(cache, tokens="cls")  # a new key: cannot be written
        assert not fs.from_cache
    finally:
        cache.chmod(0o755)
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob(".*.tmp"))


class _FullDisk:
    """A file that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, fd, room):
        self._fh, self._room = os.fdopen(fd, "wb"), room

    def write(self, b):
        if len(b) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(b)
        return self._fh.write(b)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def test_full_disk(tmp_path, monkeypatch):
    fs = _features(n=200)
    for room in (0, 100, 3000):
        monkeypatch.setattr(fc, "_open_temp", lambda fd, room=room: _FullDisk(fd, room))
        with pytest.warns(UserWarning, match="cannot write the feature cache.*No space left on device"):
            assert fc.save(tmp_path, KEY, fs) is None
        assert list(tmp_path.iterdir()) == []  # no entry, no temporary
    monkeypatch.undo()
    assert fc.save(tmp_path, KEY, fs) is not None
    assert _quiet_lookup(tmp_path)[1] == fc.HIT


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(fh, key, fs):
        fh.write(b"PK\x03\x04 half an entry")
        raise KeyboardInterrupt

    monkeypatch.setattr(fc, "_write_entry", boom)
    with pytest.raises(KeyboardInterrupt):
        fc.save(tmp_path, KEY, _features())
    assert list(tmp_path.iterdir()) == []


def _assert_skipped(entry: Path, before: bytes, fs):
    with pytest.warns(UserWarning, match="cannot be read.*leaving the entry alone") as rec:
        assert not fs().from_cache
    assert all("\n" not in str(w.message) for w in rec)
    assert entry.exists() and entry.read_bytes() == before  # neither deleted nor overwritten


def test_unreadable_entry_is_skipped_not_deleted(tmp_path, monkeypatch):
    """Root-proof: the read fails with PermissionError as it does for a colleague's 0600 file."""
    _run_tiny(tmp_path)
    entry = sorted(tmp_path.glob("*.npz"))[0]  # one layer's entry
    before = entry.read_bytes()
    real = fc._open_readonly

    def denied(path):
        if Path(path) == entry:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(fc, "_open_readonly", denied)
    _assert_skipped(entry, before, lambda: _run_tiny(tmp_path))


def test_unreadable_entry_by_mode(tmp_path):
    if not _permissions_enforced(tmp_path):
        pytest.skip("running as root: file permissions are not enforced")
    _run_tiny(tmp_path)
    entry = sorted(tmp_path.glob("*.npz"))[0]  # one layer's entry
    before = entry.read_bytes()
    entry.chmod(0)
    try:
        with pytest.warns(UserWarning, match="cannot be read"):
            assert not _run_tiny(tmp_path).from_cache
        assert entry.exists() and stat.S_IMODE(entry.stat().st_mode) == 0
    finally:
        entry.chmod(0o644)
    assert entry.read_bytes() == before


# ---------------------------------------------------------------- 4. modes and leftovers


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_entry_mode_follows_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = fc.save(tmp_path / "cache", KEY, _features())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_stale_temporaries_are_removed_on_write(tmp_path):
    old = time.time() - 2 * fc.TEMP_MAX_AGE
    ours_old = [tmp_path / f".{KEY}.abc_123.tmp", tmp_path / f".{'e' * 32}.4242-9f00ba.tmp"]
    ours_fresh = tmp_path / f".{'a' * 32}.live-writer.tmp"
    others = [tmp_path / ".notours.tmp", tmp_path / "user.tmp", tmp_path / f".{KEY}.tmp",
              tmp_path / f"{KEY}.abc.tmp", tmp_path / f".{KEY}.abc.tmp.bak"]
    for p in [*ours_old, ours_fresh, *others]:
        p.write_bytes(b"x")
    old_dir = tmp_path / f".{'b' * 32}.dir.tmp"
    old_dir.mkdir()
    link = tmp_path / f".{'c' * 32}.link.tmp"
    os.symlink(others[0], link)
    for p in [*ours_old, *others, old_dir]:
        os.utime(p, (old, old))
    os.utime(link, (old, old), follow_symlinks=False)
    fc.save(tmp_path, "d" * 32, _features())
    assert not any(p.exists() for p in ours_old)
    assert ours_fresh.exists() and all(p.exists() for p in others) and old_dir.is_dir() and link.is_symlink()


# ---------------------------------------------------------------- 5. atomic writes


def test_concurrent_reader_never_sees_half_an_entry(tmp_path):
    a, b = _features(n=3000, seed=1), _features(n=3000, seed=2)
    stop = threading.Event()
    errors = []

    def writer():
        try:
            i = 0
            while not stop.is_set():
                fc.save(tmp_path, KEY, a if i % 2 == 0 else b)
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    fc.save(tmp_path, KEY, a)
    t = threading.Thread(target=writer)
    t.start()
    seen = {"a": 0, "b": 0}
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and min(seen.values()) < 15:
            got, state, caught = _quiet_lookup(tmp_path)
            assert state == fc.HIT and not caught, state
            seen["a" if _same(got, a) else "b"] += 1
            assert _same(got, a) or _same(got, b)
    finally:
        stop.set()
        t.join()
    assert not errors
    assert min(seen.values()) > 0  # the reader really raced the writer
    assert not list(tmp_path.glob(".*.tmp"))


def test_notebook_globals_do_not_bust_the_key_but_class_code_does():
    import types

    from ncprobe.features.extract import _module_code_digest

    def notebook(source, counter):
        mod = types.ModuleType("__main__")
        exec(compile(source + f"\ncounter = {counter}\n", "<cell>", "exec"), mod.__dict__)
        return _module_code_digest(mod, [mod.Net])

    assert notebook(_NET_V1, 1) == notebook(_NET_V1, 2)  # a loop counter in the notebook changed
    assert notebook(_NET_V1, 1) != notebook(_NET_V2, 1)  # the class's forward changed


def test_code_held_in_the_module_object_is_keyed():
    torch.manual_seed(0)
    traced = torch.fx.symbolic_trace(TinyNet(4))
    fp = architecture_fingerprint(make_checkpoint(traced, "head", ["stage1"]))
    for node in traced.graph.nodes:  # change the generated forward: relu -> sigmoid
        if node.op == "call_module" and node.target == "stage2.1":
            with traced.graph.inserting_after(node):
                new = traced.graph.call_function(torch.sigmoid, (node.args[0],))
            node.replace_all_uses_with(new)
            traced.graph.erase_node(node)
    traced.recompile()
    assert architecture_fingerprint(make_checkpoint(traced, "head", ["stage1"]))["script_code"] != fp["script_code"]


def test_unfingerprintable_model_runs_without_cache(tmp_path, monkeypatch):
    from ncprobe.features import extract as ex

    def broken(ckpt):
        raise RuntimeError("odd class")

    monkeypatch.setattr(ex, "architecture_fingerprint", broken)
    with pytest.warns(UserWarning, match="not using the feature cache"):
        fs = _run_tiny(tmp_path)
    assert not fs.from_cache and list(tmp_path.iterdir()) == []
