"""Hostile inputs for the output tables: interrupted and failed writes, killed runs, re-typed ids,
file modes, stale temporaries, malformed tables for the leaderboard, OS errors.

Every test builds its input in ``tmp_path``. The tests that need a real tiny or read-only file
system mount a tmpfs there (root only) and skip cleanly otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import time
import warnings
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from ncprobe.errors import NcprobeError
from ncprobe.report import csvlog
from ncprobe.report.csvlog import (
    JOURNAL,
    OutputError,
    TableError,
    append_rows,
    append_tables,
    check_writable,
    os_error,
    read_table,
    remove_stale_temporaries,
    snapshot,
)
from ncprobe.report.leaderboard import leaderboard, read_ood_csv, read_run_tables
from ncprobe.report.schema import (
    COLLAPSE_COLUMNS,
    CORRELATION_COLUMNS,
    IDENTIFIER_COLUMNS,
    OOD_COLUMNS,
    TRANSFER_COLUMNS,
    RunInfo,
)

# ------------------------------------------------------------------------------------------ builders


def ood_rows(run="r1", *, group="", checkpoint="m", oods=("a", "b"), layers=("penultimate",), scorer="gda",
             auroc=None, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(abs(hash((run, scorer))) % 2**32)
    rows = []
    for layer in layers:
        for o in oods:
            row = {c: 0.5 for c in OOD_COLUMNS}
            row.update(run_id=run, timestamp="2024-05-01T10:00:00+00:00", checkpoint=checkpoint,
                       checkpoint_sha256="00ab", arch="resnet", mode="", id="cifar10", fit="cifar10:train", ood=o,
                       layer=layer, layer_index=3, dim=64, scorer=scorer, params="", tuned_on="",
                       auroc=float(rng.uniform(0.6, 0.95)) if auroc is None else auroc, fpr95=0.3, id_accuracy=0.9,
                       n_fit=10, n_id=10, n_ood=10, seed=seed, group=group, ncprobe_version="0.1")
            rows.append(row)
    return pd.DataFrame(rows, columns=OOD_COLUMNS)


def collapse_rows(run="r1", *, checkpoint="m", group="") -> pd.DataFrame:
    rows = []
    for i, layer in enumerate(["block1", "penultimate"]):
        row = {c: 0.25 for c in COLLAPSE_COLUMNS}
        row.update(checkpoint=checkpoint, checkpoint_sha256="00ab", arch="resnet", data="cifar10:train", layer=layer,
                   layer_index=i, dim=64, n=10, classes=4, nc1=1.0 + i, run_id=run,
                   timestamp="2024-05-01T10:00:00+00:00", mode="", group=group)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLLAPSE_COLUMNS)


def tree(directory) -> dict[str, bytes]:
    """Every entry of a folder: name -> bytes (a folder's entry maps to b'<dir>')."""
    out = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        out[entry.name] = b"<dir>" if entry.is_dir() else open(entry.path, "rb").read()
    return out


def plant(directory, files: dict[str, bytes]):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


class Budget:
    """How many more bytes the simulated disk takes, across every file of a write."""

    def __init__(self, left):
        self.left = left
        self.sizes = []  # bytes asked per write call, to find file boundaries


class FailingFile:
    """A file whose ``write`` stores only the bytes the budget allows, then fails (ENOSPC), like a disk
    that fills up mid-row. ``on_exhausted`` replaces the failure (e.g. os._exit to simulate kill -9)."""

    def __init__(self, real, budget, on_exhausted=None):
        self.real, self.budget, self.on_exhausted = real, budget, on_exhausted

    def write(self, data):
        data = bytes(data)
        self.budget.sizes.append(len(data))
        n = min(len(data), self.budget.left)
        if n:
            self.real.write(data[:n])
        self.budget.left -= n
        if n < len(data):
            if self.on_exhausted is not None:
                self.on_exhausted()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()


@contextlib.contextmanager
def disk_budget(monkeypatch, k, on_exhausted=None):
    budget = Budget(k)
    real_new, real_append = csvlog._open_new, csvlog._open_append
    monkeypatch.setattr(csvlog, "_open_new", lambda p: FailingFile(real_new(p), budget, on_exhausted))
    monkeypatch.setattr(csvlog, "_open_append", lambda p: FailingFile(real_append(p), budget, on_exhausted))
    try:
        yield budget
    finally:
        monkeypatch.setattr(csvlog, "_open_new", real_new)
        monkeypatch.setattr(csvlog, "_open_append", real_append)


@pytest.fixture
def no_fsync(monkeypatch):
    """The every-byte loops run thousands of writes: skip the (slow, here pointless) fsyncs."""
    monkeypatch.setattr(csvlog, "_fsync", lambda fd: None)
    monkeypatch.setattr(csvlog._DirLock, "fsync_dir", lambda self: None)


def bytes_needed(monkeypatch, directory, tables) -> tuple[int, list[int]]:
    """Bytes one successful write of ``tables`` into (a copy of) ``directory`` sends, and its write sizes."""
    with disk_budget(monkeypatch, 10**9) as budget:
        append_tables(directory, tables)
    return 10**9 - budget.left, budget.sizes


def one_line(exc) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text
    return text


# ------------------------------------------------- 1. an append interrupted at every byte: all or nothing

STARTS = {
    "append": {"ood.csv": None},  # an existing table, same columns: the rows are appended in place
    "create": {},  # no table yet: a new file
    "rewrite": {"ood.csv": "old-columns"},  # the run brings a new column: header-union rewrite
}


def _start(kind, tmp_path):
    base = tmp_path / f"start-{kind}"
    if kind == "append":
        append_tables(base, {"ood.csv": ood_rows("r0", group="NA", checkpoint="007")})
    elif kind == "rewrite":
        append_tables(base, {"ood.csv": ood_rows("r0", group="NA", checkpoint="007").drop(columns=["tuned_on", "seed"])})
    else:
        base.mkdir()
    return tree(base)


@pytest.mark.parametrize("kind", ["append", "create", "rewrite"])
def test_append_interrupted_at_every_byte_leaves_the_table_byte_for_byte_unchanged(kind, tmp_path, monkeypatch,
                                                                                    no_fsync):
    start = _start(kind, tmp_path)
    new = {"ood.csv": ood_rows("r1", group="", checkpoint="7", oods=("a",))}
    total, _ = bytes_needed(monkeypatch, plant(tmp_path / "count", start), new)
    assert total > 0
    for k in range(total):  # the disk fills up after k bytes, whichever file (journal, copy, table) they go to
        d = plant(tmp_path / f"k{k}", start)
        with disk_budget(monkeypatch, k), pytest.raises(OutputError) as err:
            append_tables(d, new)
        assert "No space left on device" in one_line(err.value), k
        assert tree(d) == start, k  # same files, same bytes: no half row, no journal, no temporary left
        if start:
            pd.read_csv(d / "ood.csv")  # still parses
    d = plant(tmp_path / "full", start)
    with disk_budget(monkeypatch, total):
        append_tables(d, new)
    assert set(read_table(d / "ood.csv")["run_id"]) == ({"r0", "r1"} if start else {"r1"})


def test_failed_fsync_rolls_back(tmp_path, monkeypatch):
    start = _start("append", tmp_path)
    for nth in (1, 2):  # the journal's fsync, then the table's
        d = plant(tmp_path / f"f{nth}", start)
        calls = []

        def fsync(fd, nth=nth, calls=calls):
            calls.append(fd)
            if len(calls) == nth:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            os.fsync(fd)

        monkeypatch.setattr(csvlog, "_fsync", fsync)
        with pytest.raises(OutputError, match="Input/output error"):
            append_tables(d, {"ood.csv": ood_rows("r1")})
        assert tree(d) == start
    monkeypatch.setattr(csvlog, "_fsync", os.fsync)


def test_ctrl_c_mid_append_rolls_back_and_stays_an_interrupt(tmp_path, monkeypatch):
    start = _start("append", tmp_path)
    d = plant(tmp_path / "d", start)

    def interrupt():
        raise KeyboardInterrupt

    with disk_budget(monkeypatch, 400, on_exhausted=interrupt), pytest.raises(KeyboardInterrupt):
        append_tables(d, {"ood.csv": ood_rows("r1")})
    assert tree(d) == start


def test_a_table_without_final_newline_is_refused_and_left_alone(tmp_path):
    d = tmp_path / "runs"
    append_rows(d / "ood.csv", ood_rows("r0"))
    with open(d / "ood.csv", "ab") as fh:
        fh.write(b"r9,2024-05-01T10:00:00+00:00,m,00ab,resnet,,cifar10,cifar10:train,a,penult")  # a half row
    before = tree(d)
    with pytest.raises(TableError) as err:
        append_rows(d / "ood.csv", ood_rows("r1"))
    msg = one_line(err.value)
    assert str(d / "ood.csv") in msg and "last line is incomplete" in msg and "delete" in msg
    assert tree(d) == before
    with pytest.raises(TableError, match="last line is incomplete"):  # found before any computation too
        check_writable(d, ["ood.csv", "collapse.csv"])


def test_a_half_row_is_never_read_as_a_run(tmp_path):
    d = tmp_path / "runs"
    append_rows(d / "ood.csv", ood_rows("r0"))
    with open(d / "ood.csv", "ab") as fh:
        fh.write(b"r9,2024-05-01T10:00:00+00:00,m,00ab,resnet,,cifar10,cifar10:train,a,penultimate,3,64,gda,,,0.1")
    with pytest.warns(UserWarning, match="incomplete"):
        df = read_ood_csv(d / "ood.csv")
    assert set(df["run_id"]) == {"r0"}


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of the given size under tmp_path (root only; skips otherwise); unmounted after."""
    mounted = []

    def mount(name, size="64k"):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / name
        point.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _fill(directory, leave_pages=0):
    """Fill the file system of ``directory`` up, then free ``leave_pages`` pages of 4 KiB."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    n = 0
    try:
        while True:
            n += os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    os.ftruncate(fd, max(0, n - 4096 * leave_pages))
    os.close(fd)


def test_real_disk_full_in_a_tiny_tmpfs(tmpfs):
    d = tmpfs("tiny")
    append_tables(d, {"ood.csv": ood_rows("r0"), "collapse.csv": collapse_rows("r0")})
    _fill(d, leave_pages=1)  # room for the journal, not for the rows
    before = tree(d)
    big = ood_rows("r1", oods=[f"set{i}" for i in range(60)])  # ~ 10 KiB: needs new pages
    with pytest.raises(OutputError) as err:
        append_tables(d, {"ood.csv": big, "collapse.csv": collapse_rows("r1")})
    msg = one_line(err.value)
    assert "No space left on device" in msg and "free space" in msg and "unchanged" in msg
    assert tree(d) == before
    _fill(d, leave_pages=0)
    with pytest.raises(OutputError, match="No space left on device"):
        check_writable(d)  # found before any computation
    os.unlink(d / "filler")
    append_tables(d, {"ood.csv": big, "collapse.csv": collapse_rows("r1")})
    assert set(read_ood_csv(d)["run_id"]) == {"r0", "r1"}


# ----------------------------------------------------------- 2. a run's rows in all tables, or in none

def _three_tables_start(tmp_path):
    base = tmp_path / "start"
    append_tables(base, {"ood.csv": ood_rows("r0", group="NA"),
                         "transfer.csv": pd.DataFrame({"run_id": ["r0"], "transfer": ["t"], "transfer_acc": [0.5]})})
    return tree(base)


def _run_tables(run="r1"):
    return {"ood.csv": ood_rows(run, oods=("a",)), "collapse.csv": collapse_rows(run),  # ood: append, collapse: create
            "transfer.csv": pd.DataFrame({"run_id": [run], "transfer": ["t"], "transfer_acc": [0.7],
                                          "seed": [3]})}  # transfer: a new column, a rewrite


def test_append_tables_is_all_or_nothing_at_every_byte(tmp_path, monkeypatch, no_fsync):
    start = _three_tables_start(tmp_path)
    new = _run_tables()
    total, _ = bytes_needed(monkeypatch, plant(tmp_path / "count", start), new)
    for k in range(total):
        d = plant(tmp_path / f"k{k}", start)
        with disk_budget(monkeypatch, k), pytest.raises(OutputError):
            append_tables(d, new)
        assert tree(d) == start, k
    d = plant(tmp_path / "ok", start)
    append_tables(d, new)
    got = {name: set(read_table(d / name)["run_id"]) for name in new}
    assert got == {"ood.csv": {"r0", "r1"}, "collapse.csv": {"r1"}, "transfer.csv": {"r0", "r1"}}
    assert sorted(tree(d)) == ["collapse.csv", "ood.csv", "transfer.csv"]  # nothing else left behind


def _killed(directory, tables, k=None, kill_at_commit=False):
    """Run append_tables in a forked child that dies (os._exit, like kill -9) after k bytes, or just
    before removing the journal (the commit). Returns the child's exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            warnings.simplefilter("ignore")
            if kill_at_commit:
                real_unlink = os.unlink

                def unlink(path, *a, **kw):
                    if os.path.basename(str(path)) == JOURNAL:
                        os._exit(9)
                    return real_unlink(path, *a, **kw)

                os.unlink = unlink
            else:
                budget = Budget(k)
                real_new, real_append = csvlog._open_new, csvlog._open_append
                csvlog._open_new = lambda p: FailingFile(real_new(p), budget, lambda: os._exit(9))
                csvlog._open_append = lambda p: FailingFile(real_append(p), budget, lambda: os._exit(9))
            append_tables(directory, tables)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_run_killed_mid_write_is_ignored_by_readers_and_undone_by_the_next_write(tmp_path, monkeypatch, no_fsync):
    start = _three_tables_start(tmp_path)
    new, later = _run_tables("r1"), _run_tables("r2")
    total, sizes = bytes_needed(monkeypatch, plant(tmp_path / "count", start), new)
    expected = tree(append_tables(plant(tmp_path / "expected", start), later))  # as if r1 had never run
    bounds = np.cumsum(sizes)
    ks = sorted({k for b in bounds for k in (b - 1, b, b + 1) if 0 <= k < total} | set(range(0, total, 37)))
    cases = [(k, False) for k in ks] + [(None, True)]
    for k, at_commit in cases:
        d = plant(tmp_path / f"kill-{k}", start)
        assert _killed(d, new, k, at_commit) == 9
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seen = snapshot(d, list(new))
            ood, coll = read_run_tables(d)
        for name in new:  # readers see the tables as before the killed write
            assert seen[name] == start.get(name), (k, name)
        assert set(ood["run_id"]) == {"r0"} and coll is None
        if (d / JOURNAL).exists():
            assert any("interrupted" in str(w.message) for w in caught)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            append_tables(d, later)  # undoes the killed write, then appends
        assert tree(d) == expected, k


def test_concurrent_multi_table_writers_keep_every_run_whole(tmp_path):
    import multiprocessing as mp

    d = tmp_path / "runs"
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_multi_worker, [(str(d), w) for w in range(4)])
    ood, coll = read_table(d / "ood.csv"), read_table(d / "collapse.csv")
    assert ood.groupby("run_id").size().eq(2).all() and ood["run_id"].nunique() == 4 * 6
    assert set(ood["run_id"]) == set(coll["run_id"])


def _multi_worker(args):
    d, w = args
    for i in range(6):
        append_tables(d, {"ood.csv": ood_rows(f"w{w}-{i}"), "collapse.csv": collapse_rows(f"w{w}-{i}")})


# ------------------------------------------------------------------------ 3. identifier columns stay text

def test_identifier_columns_are_the_schemas_name_columns():
    tables = set(OOD_COLUMNS) | set(COLLAPSE_COLUMNS) | set(TRANSFER_COLUMNS) | set(CORRELATION_COLUMNS)
    assert IDENTIFIER_COLUMNS <= tables
    assert {f.name for f in fields(RunInfo) if f.type in ("str", str)} <= IDENTIFIER_COLUMNS  # derived, one source
    assert {"run_id", "timestamp", "checkpoint", "checkpoint_sha256", "arch", "mode", "id", "fit", "ood", "layer",
            "scorer", "params", "tuned_on", "group", "data", "transfer", "x", "y", "ncprobe_version"} <= IDENTIFIER_COLUMNS
    assert not IDENTIFIER_COLUMNS & {"auroc", "fpr95", "seed", "dim", "nc1", "classes", "layer_index"}


def test_ids_survive_append_rewrite_and_read_as_written(tmp_path):
    d = tmp_path / "runs"
    odd = [("1e5", "NA", "007"), ("2", "", "7"), ("0003", "nan", "1.0")]  # (run_id, group, checkpoint)
    for run, group, ckpt in odd:
        append_rows(d / "ood.csv", ood_rows(run, group=group, checkpoint=ckpt).drop(columns=["tuned_on"]))
    before = (d / "ood.csv").read_bytes().decode().splitlines()
    append_rows(d / "ood.csv", ood_rows("r9").assign(extra=1.5))  # new columns: the header-union rewrite
    after = (d / "ood.csv").read_bytes().decode().splitlines()
    assert after[0] == before[0] + ",tuned_on,extra"
    assert after[1:len(before)] == [line + ",," for line in before[1:]]  # old rows: text kept cell for cell
    df = read_table(d / "ood.csv")
    assert df["run_id"].drop_duplicates().tolist() == ["1e5", "2", "0003", "r9"]
    assert df["group"].drop_duplicates().tolist() == ["NA", "", "nan"]
    assert df["checkpoint"].drop_duplicates().tolist() == ["007", "7", "1.0", "m"]
    assert pd.api.types.is_float_dtype(df["auroc"]) and pd.api.types.is_integer_dtype(df["n_id"])  # numbers stay numbers
    assert np.isnan(df["extra"].iloc[0]) and df["extra"].iloc[-1] == 1.5


def test_leaderboard_keeps_NA_group_and_leading_zero_ids_apart(tmp_path):
    d = tmp_path / "runs"
    for run, group, ckpt in [("a", "NA", "007"), ("b", "", "007"), ("c", "NA", "7"), ("d", "", "7")]:
        append_tables(d, {"ood.csv": ood_rows(run, group=group, checkpoint=ckpt),
                          "collapse.csv": collapse_rows(run, checkpoint=ckpt, group=group)})
    ood, coll = read_run_tables(d / "ood.csv")
    board = leaderboard(ood, collapse=coll)
    assert sorted(zip(board["checkpoint"], board["group"], strict=True)) == [("007", ""), ("007", "NA"), ("7", ""), ("7", "NA")]
    assert (board["runs"] == 1).all() and board["nc1_penultimate"].eq(2.0).all()
    by_group = leaderboard(ood, group_by=["group"])
    # the four runs share one checkpoint sha256: within a group the two are identical reruns, counted once
    assert sorted(by_group["group"]) == ["", "NA"] and (by_group["runs"] == 1).all()
    assert sum("identical reruns counted once" in n for n in by_group.attrs["notes"]) == 2


# -------------------------------------------------------- 4. modes, locks without lock files, stale files

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_tables_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        append_tables(tmp_path / "runs", {"ood.csv": ood_rows("r1"), "collapse.csv": collapse_rows("r1")})
    finally:
        os.umask(old)
    for name in ("ood.csv", "collapse.csv"):
        assert stat.S_IMODE(os.stat(tmp_path / "runs" / name).st_mode) == mode
    assert not list((tmp_path / "runs").glob("*.lock"))  # the folder itself is locked: no lock files


def test_a_rewritten_table_keeps_its_permissions(tmp_path):
    d = tmp_path / "runs"
    append_rows(d / "ood.csv", ood_rows("r0").drop(columns=["seed"]))
    os.chmod(d / "ood.csv", 0o640)
    append_rows(d / "ood.csv", ood_rows("r1"))  # a new column: rewritten
    assert stat.S_IMODE(os.stat(d / "ood.csv").st_mode) == 0o640
    assert "seed" in read_table(d / "ood.csv").columns


def test_stale_temporaries_only_ncprobes_only_old(tmp_path):
    d = tmp_path / "runs"
    append_rows(d / "ood.csv", ood_rows("r0"))
    old_time = time.time() - 2 * csvlog.STALE_AGE_S
    names = {
        ".ood.csv.ab12_d34.tmp": True,  # an older version's mkstemp copy, old: removed
        ".r1.scores.npz.tmp.npz": True,  # a killed run's scores, old: removed
        ".ncprobe-probe.0123456789ab.tmp": True,
        ".ood.csv.0123456789ab.bak": True,  # this version's backup: written only under the lock
        ".ncprobe-journal.0123456789ab.tmp": True,
        ".notes.tmp": False,  # not ncprobe's
        ".ood.csv.old.bak": False,  # a user's backup
        "ood.csv.tmp": False,
    }
    for name in names:
        (d / name).write_bytes(b"x")
        os.utime(d / name, (old_time, old_time))
    (d / ".collapse.csv.zz12zz34.tmp").write_bytes(b"fresh")  # an older version writing right now: kept
    (d / "elsewhere").write_bytes(b"keep me")
    os.symlink(d / "elsewhere", d / ".x.csv.ab12cd34.tmp")  # never through a symlink
    os.utime(d / ".x.csv.ab12cd34.tmp", (old_time, old_time), follow_symlinks=False)
    append_rows(d / "ood.csv", ood_rows("r1"))
    left = set(os.listdir(d))
    for name, removed in names.items():
        assert (name not in left) == removed, name
    assert {".collapse.csv.zz12zz34.tmp", ".x.csv.ab12cd34.tmp", "elsewhere"} <= left
    assert (d / "elsewhere").read_bytes() == b"keep me"
    # fresh files of the lock-guarded kinds are removed only by a caller holding the lock
    (d / ".ood.csv.ba9876543210.tmp").write_bytes(b"x")
    assert remove_stale_temporaries(d) == []
    assert remove_stale_temporaries(d, locked=True) == [d / ".ood.csv.ba9876543210.tmp"]


def test_reading_and_locking_need_no_write_access(tmpfs):
    d = tmpfs("ro")
    append_tables(d, {"ood.csv": ood_rows("r0"), "collapse.csv": collapse_rows("r0")})
    before = tree(d)
    res = subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot remount read-only: {res.stderr.strip()}")
    ood, coll = read_run_tables(d)  # the shared lock is taken on the folder, opened read-only
    assert set(ood["run_id"]) == {"r0"} and coll is not None
    with pytest.raises(OutputError) as err:
        check_writable(d, ["ood.csv"])
    assert "Read-only file system" in one_line(err.value) and "choose another output folder" in str(err.value)
    with pytest.raises(OutputError, match="Read-only file system"):
        append_tables(d, {"ood.csv": ood_rows("r1")})
    assert tree(d) == before


# ------------------------------------------------------------- 5. the leaderboard on hostile tables

def _cli(args, capsys):
    from ncprobe.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def _cli_error(args, capsys):
    code, out, err = _cli(args, capsys)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (b"hello, this is a note\nnot, a, table, at, all\n", "not a readable CSV"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text CSV"),
    (b"run_id,checkpoint,auroc\nr1,m,0.5\n", "lacks the columns fpr95, layer, ood, scorer"),
    (",".join(OOD_COLUMNS).encode() + b"\n", "has no rows"),
])
def test_leaderboard_bad_ood_csv_is_one_line(tmp_path, capsys, content, problem):
    path = tmp_path / "ood.csv"
    path.write_bytes(content)
    err = _cli_error(["leaderboard", path], capsys)
    assert str(path) in err and problem in err


def test_leaderboard_missing_file_and_folder(tmp_path, capsys):
    assert "does not exist" in _cli_error(["leaderboard", tmp_path / "nope.csv"], capsys)
    assert "does not exist" in _cli_error(["leaderboard", tmp_path], capsys)  # a folder without ood.csv


def test_leaderboard_text_in_auroc_is_an_error_naming_the_line(tmp_path, capsys):
    d = tmp_path / "runs"
    append_rows(d / "ood.csv", ood_rows("r0").assign(auroc=["0.7", "oops"]))
    err = _cli_error(["leaderboard", d / "ood.csv"], capsys)
    assert str(d / "ood.csv") in err and "column auroc" in err and "'oops' on line 3" in err


def test_leaderboard_nan_and_inf_aurocs_are_left_out_with_a_count(tmp_path, capsys):
    d = tmp_path / "runs"
    good = ood_rows("r0", auroc=0.8)
    bad = pd.concat([ood_rows("r1", auroc=0.9).assign(auroc=[np.nan, 0.9]),
                     ood_rows("r2", auroc=0.9).assign(auroc=[np.inf, -np.inf])])
    append_rows(d / "ood.csv", pd.concat([good, bad]))
    with pytest.warns(UserWarning, match=r"3 row\(s\) have a NaN, infinite or out-of-range \(not in \[0, 1\]\) auroc/fpr95; their 2 \(run, scorer, layer\) entries \(4 rows\)"):
        df = read_ood_csv(d / "ood.csv")
    board = leaderboard(df, group_by=["checkpoint"])
    assert board["runs"].tolist() == [1] and board["auroc_mean"].iloc[0] == pytest.approx(0.8)
    with pytest.warns(UserWarning, match="infinite"):
        code, out, _ = _cli(["leaderboard", d / "ood.csv", "--format", "csv", "--group-by", "run_id"], capsys)
    assert code == 0 and "r0" in out and "r1" not in out and "inf" not in out


def test_leaderboard_malformed_collapse_beside_a_good_ood_csv(tmp_path, capsys):
    for content, problem in [(b"\x00\x01garbage\xff", "not a text CSV"), (b"run_id,layer\nr0,penultimate\n", "lacks the columns nc1"),
                             (b"", "empty"), (b"run_id,layer,nc1\nr0,penultimate,abc\n", "column nc1")]:
        d = tmp_path / f"runs-{len(content)}-{problem[:3]}"
        append_rows(d / "ood.csv", ood_rows("r0"))
        (d / "collapse.csv").write_bytes(content)
        with pytest.warns(UserWarning, match=problem) as rec:
            ood, coll = read_run_tables(d / "ood.csv")
        assert coll is None and str(d / "collapse.csv") in str(rec[0].message) and "NC1 is left out" in str(rec[0].message)
        with pytest.warns(UserWarning, match="NC1 is left out"):
            code, out, _ = _cli(["leaderboard", d / "ood.csv", "--format", "csv"], capsys)
        assert code == 0 and "nc1_penultimate" not in out and "gda" in out


def test_leaderboard_counts_an_ood_set_listed_twice_once(tmp_path):
    d = tmp_path / "runs"
    rows = ood_rows("r0", oods=("a", "b", "a"))
    rows["auroc"] = [0.6, 0.8, 0.6]
    append_rows(d / "ood.csv", rows)
    with pytest.warns(UserWarning, match=r"listed more than once within a run \(e.g. 'a' in run r0\); each counts once"):
        df = read_ood_csv(d)
    board = leaderboard(df, group_by=["checkpoint"])
    assert board["auroc_mean"].iloc[0] == pytest.approx(0.7)  # (0.6 + 0.8) / 2, not (0.6 + 0.8 + 0.6) / 3
    mem = pd.concat([ood_rows("r0", oods=("a",), auroc=0.5), ood_rows("r0", oods=("a",), auroc=0.9)])
    with pytest.warns(UserWarning, match="AUROCs differ"):  # in-memory tables get the same check
        assert leaderboard(mem, group_by=["checkpoint"])["auroc_mean"].iloc[0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------- 6. OS errors

def test_os_error_format():
    err = os_error("/x/ood.csv", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), note=" (nothing was written)")
    assert isinstance(err, NcprobeError)
    assert str(err) == ("/x/ood.csv: No space left on device; free space on that disk or choose another output "
                        "folder (nothing was written)")
    err = os_error("/x/ood.csv", PermissionError(errno.EACCES, "Permission denied"), reading=True)
    assert str(err) == "/x/ood.csv: Permission denied; ask for read permission or copy the file somewhere readable"


def test_out_is_a_file(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("not a folder")
    for call in (lambda: check_writable(f), lambda: append_tables(f, {"ood.csv": ood_rows()}),
                 lambda: append_tables(f / "sub", {"ood.csv": ood_rows()})):
        with pytest.raises(OutputError) as err:
            call()
        msg = one_line(err.value)
        assert str(f) in msg and ("is a file" in msg or "not a folder" in msg)
    assert f.read_text() == "not a folder"


def test_permission_denied_is_one_line(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    append_rows(d / "ood.csv", ood_rows("r0"))
    before = tree(d)

    def denied(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    for hook in ("_open_new", "_open_append"):
        with monkeypatch.context() as m:
            m.setattr(csvlog, hook, denied)
            with pytest.raises(OutputError) as err:
                append_tables(d, {"ood.csv": ood_rows("r1").assign(**({"extra": 1} if hook == "_open_new" else {}))})
        msg = one_line(err.value)
        assert "Permission denied; ask for write permission" in msg
        assert tree(d) == before
    with monkeypatch.context() as m:
        m.setattr(csvlog, "_open_new", denied)
        with pytest.raises(OutputError, match="Permission denied.*checked before computing anything"):
            check_writable(d)
    if os.geteuid() != 0:  # real permissions (root ignores them)
        os.chmod(d, 0o555)
        try:
            with pytest.raises(OutputError, match="Permission denied"):
                check_writable(d)
        finally:
            os.chmod(d, 0o755)


def test_a_folder_where_a_table_belongs(tmp_path, capsys):
    d = tmp_path / "runs"
    (d / "ood.csv").mkdir(parents=True)
    with pytest.raises(OutputError, match="not a regular file"):
        append_tables(d, {"ood.csv": ood_rows()})
    with pytest.raises(OutputError, match="not a regular file"):
        check_writable(d, ["ood.csv"])


def test_check_writable_creates_and_leaves_nothing(tmp_path):
    d = tmp_path / "a" / "b"
    assert check_writable(d, ["ood.csv", "collapse.csv"]) == d
    assert d.is_dir() and os.listdir(d) == []


def test_a_killed_write_followed_by_someone_elses_append_is_not_undone_blindly(tmp_path):
    start = _three_tables_start(tmp_path)
    d = plant(tmp_path / "d", start)
    assert _killed(d, _run_tables("r1"), kill_at_commit=True) == 9  # all rows written, journal still there
    with open(d / "ood.csv", "ab") as fh:  # e.g. an older ncprobe, unaware of the journal, appends
        fh.write(b"x" * 10 + b"\n")
    before = tree(d)
    with pytest.raises(TableError) as err:
        append_tables(d, _run_tables("r2"))
    msg = one_line(err.value)
    assert str(d / "ood.csv") in msg and "grew after" in msg and JOURNAL in msg
    assert tree(d) == before


def test_a_file_system_that_cannot_lock_warns_and_still_writes(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    d = tmp_path / "runs"
    with pytest.warns(UserWarning, match="cannot lock it"):
        append_tables(d, {"ood.csv": ood_rows("r1")})
    with pytest.warns(UserWarning, match="cannot lock it"):
        assert set(read_table(d / "ood.csv")["run_id"]) == {"r1"}
    # unlocked, a journal of a live run on this machine is another writer at work: not rolled back
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (d / JOURNAL).write_text(
            '{"ncprobe_journal": 1, "tx": "0123456789ab", "pid": %d, "host": "%s", "started": "now", '
            '"files": [{"name": "ood.csv", "kind": "append", "size": 0}]}' % (sleeper.pid, __import__("socket").gethostname()))
        before = tree(d)
        with pytest.warns(UserWarning, match="cannot lock it"), pytest.raises(OutputError, match="another ncprobe run"):
            append_tables(d, {"ood.csv": ood_rows("r2")})
        assert tree(d) == before
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("journal", [b"{not json", b'{"tx": "0123456789ab", "files": [{"name": "../x.csv", "kind": "create"}]}',
                                     b'{"tx": "0123456789ab", "files": [{"name": "ood.csv", "kind": "append", "size": -1}]}'])
def test_a_journal_not_from_ncprobe_is_refused_not_followed(tmp_path, journal):
    d = tmp_path / "runs"
    append_rows(d / "ood.csv", ood_rows("r0"))
    (tmp_path / "x.csv").write_text("outside\n")
    (d / JOURNAL).write_bytes(journal)
    before = tree(d)
    with pytest.raises(TableError, match="not a journal written by ncprobe"):
        append_rows(d / "ood.csv", ood_rows("r1"))
    with pytest.raises(TableError, match="not a journal written by ncprobe"):
        read_ood_csv(d)
    assert tree(d) == before and (tmp_path / "x.csv").read_text() == "outside\n"
