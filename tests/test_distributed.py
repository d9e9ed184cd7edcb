"""torchrun --nproc_per_node=2 (gloo, CPU): the same rows as one process, and a rank that dies
stops the run with one line per surviving rank and leaves no cache entry or CSV row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.slow

NET = """
import os, signal
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        kill = os.environ.get("KILL_RANK")
        if kill and kill == os.environ.get("RANK") and self.calls > 3:
            os.kill(os.getpid(), signal.SIGKILL)  # this rank dies mid-extraction, as a crashed node would
        return self.fc(self.pool(self.block2(self.block1(x))).flatten(1))
"""


def _data(path, n, classes, seed, shift=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 90, size=(n, 12, 12, 3)) + (50 * y + shift)[:, None, None, None]
    np.savez(path, x=np.clip(x, 0, 255).astype(np.uint8), y=y.astype(np.int64))
    return str(path)


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    ns: dict = {}
    exec(NET, ns)  # noqa: S102 - the test's own model file
    torch.manual_seed(0)
    torch.save(ns["Net"]().state_dict(), tmp_path / "w.pt")
    sets = {"fit": _data(tmp_path / "fit.npz", 150, 3, 0), "id": _data(tmp_path / "id.npz", 75, 3, 1),
            "ood": _data(tmp_path / "ood.npz", 60, 3, 2, shift=25)}
    return tmp_path, sets


def _args(tmp_path, sets, out, cache):
    return ["layers", "w.pt", "--arch", "net.py:Net", "--num-classes", "3", "--mean", "0.5,0.5,0.5",
            "--std", "0.25,0.25,0.25", "--input-size", "12", "--id", sets["id"], "--fit", sets["fit"],
            "--ood", f"far={sets['ood']}", "--scorers", "gda,mahalanobis,knn,energy,msp,vim", "--batch-size", "16",
            "--out", str(out), "--cache", str(cache), "-q", "--no-plot", "--device", "cpu"]


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", NCPROBE_DIST_TIMEOUT="60", **extra)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NCPROBE_CACHE"):
        env.pop(key, None)
    return env


def _torchrun(tmp_path, args, env, log_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--log-dir", str(log_dir), "--redirects", "3", "-m", "ncprobe", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _rank_logs(log_dir: Path, stream: str) -> dict[int, str]:
    """Each rank's captured stdout/stderr (torchrun --log-dir DIR --redirects 3)."""
    out = {}
    for path in log_dir.rglob(f"{stream}.log"):
        out[int(path.parent.name)] = path.read_text()
    return out


def _same(a: pd.DataFrame, b: pd.DataFrame):
    volatile = ["run_id", "timestamp"]
    a, b = a.drop(columns=volatile), b.drop(columns=volatile)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        if pd.api.types.is_numeric_dtype(a[col]) and pd.api.types.is_numeric_dtype(b[col]):
            np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=0, atol=1e-9,
                                       equal_nan=True, err_msg=col)
        else:
            assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col


def test_two_ranks_give_the_rows_of_one_process(setup):
    tmp_path, sets = setup
    one = subprocess.run([sys.executable, "-m", "ncprobe", *_args(tmp_path, sets, tmp_path / "one", tmp_path / "c1")],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = _torchrun(tmp_path, _args(tmp_path, sets, tmp_path / "two", tmp_path / "c2"), _env(), tmp_path / "logs")
    assert two.returncode == 0, two.stderr + "".join(_rank_logs(tmp_path / "logs", "stderr").values())
    for table in ("ood.csv", "collapse.csv"):
        _same(pd.read_csv(tmp_path / "one" / table, keep_default_na=False, na_values=[""]),
              pd.read_csv(tmp_path / "two" / table, keep_default_na=False, na_values=[""]))
    assert not "".join(_rank_logs(tmp_path / "logs", "stderr").values()).strip()  # no abort, no stray line
    stdout = _rank_logs(tmp_path / "logs", "stdout")
    assert "Per layer" in stdout[0] and stdout[1].strip() == ""  # rank 0 reports, rank 1 prints nothing
    # rank 0 filed the whole sets in the cache: a single-process rerun on it runs no forward pass
    again = subprocess.run([sys.executable, "-m", "ncprobe", *_args(tmp_path, sets, tmp_path / "three", tmp_path / "c2")],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "all served from the cache" in again.stdout


def test_a_killed_rank_stops_the_run_with_one_line_and_writes_nothing(setup):
    tmp_path, sets = setup
    res = _torchrun(tmp_path, _args(tmp_path, sets, tmp_path / "runs", tmp_path / "cache"), _env(KILL_RANK="1"),
                    tmp_path / "logs")
    assert res.returncode != 0
    errors = _rank_logs(tmp_path / "logs", "stderr")
    survivor = errors[0].strip().splitlines()
    assert len(survivor) == 1 and survivor[0].startswith("error: ") and "Traceback" not in errors[0], errors[0]
    assert "rank" in survivor[0]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.csv"))
    assert not list((tmp_path / "cache").glob("*.npz"))  # no entry, not even a partial one


def test_collapse_and_eval_under_two_ranks_equal_one_process(setup):
    tmp_path, sets = setup
    model = ["w.pt", "--arch", "net.py:Net", "--num-classes", "3", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
             "--input-size", "12", "--batch-size", "16", "-q", "--no-cache", "--device", "cpu"]
    single = subprocess.run([sys.executable, "-m", "ncprobe", "collapse", *model, "--data", sets["fit"], "--out", "one"],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    # a tiny budget: the features spill to disk and travel to rank 0 in blocks of 32 rows
    two = _torchrun(tmp_path, ["collapse", *model, "--data", sets["fit"], "--out", "two"],
                    _env(NCPROBE_MEMORY_BUDGET="64K"), tmp_path / "l1")
    assert two.returncode == 0, "".join(_rank_logs(tmp_path / "l1", "stderr").values())
    _same(pd.read_csv(tmp_path / "one" / "collapse.csv"), pd.read_csv(tmp_path / "two" / "collapse.csv"))
    acc_one = subprocess.run([sys.executable, "-m", "ncprobe", "eval", *model, "--data", sets["id"]], cwd=tmp_path,
                             env=_env(), capture_output=True, text=True, timeout=600).stdout.strip()
    two = _torchrun(tmp_path, ["eval", *model, "--data", sets["id"]], _env(), tmp_path / "l2")
    logs = _rank_logs(tmp_path / "l2", "stdout")
    assert two.returncode == 0 and acc_one.startswith("accuracy: ") and logs[0].strip() == acc_one and not logs[1].strip()


def test_a_malformed_launcher_environment_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ncprobe", "inspect", "x.pt"], cwd=tmp_path,
                         env={**_env(), "WORLD_SIZE": "abc"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: the launcher's WORLD_SIZE='abc' is not a whole number; start ncprobe with torchrun"]
