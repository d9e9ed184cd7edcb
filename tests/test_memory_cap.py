"""A `layers` run whose features are larger than the memory it may allocate completes, with the
rows of an uncapped run: the features spill to disk (memory-mapped) and the Gaussian scorers and
NC metrics fit from class statistics accumulated in blocks. The cap is RLIMIT_DATA (heap and
private anonymous memory), set in a subprocess after the imports; the same capped run with the
features held in RAM fails, which shows the cap is below their size."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA semantics are Linux's")]

NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.wide = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 1024), nn.ReLU())
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        return self.fc(self.wide(self.block(x)))
"""

#: imports everything the run will use, then caps RLIMIT_DATA at what is in use plus CAP_MB
DRIVER = """
import os, resource, sys
import numpy, scipy.linalg, sklearn, pandas, faiss, torch, torchvision, timm
import ncprobe.api, ncprobe.scores, ncprobe.jobs.compute, ncprobe.transfer, ncprobe.report.leaderboard
import ncprobe.checkpoint.loader, ncprobe.data.source_kinds, ncprobe.jobs.calibrate
from ncprobe.cli import main
for ln in open("/proc/self/status"):
    if ln.startswith("VmData:"):
        used = int(ln.split()[1]) * 1024
cap = used + int(os.environ["CAP_MB"]) * 2**20
resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
main(sys.argv[1:])
"""

CAP_MB = 250


def _npz(path, n, seed, shift=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 120, size=(n, 8, 8, 3)) + (40 * y + shift)[:, None, None, None]
    np.savez(path, x=np.clip(x, 0, 255).astype(np.uint8), y=y.astype(np.int64))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("capped")
    (d / "net.py").write_text(NET)
    (d / "driver.py").write_text(DRIVER)
    ns: dict = {}
    exec(NET, ns)  # noqa: S102 - the test's own model
    torch.manual_seed(0)
    torch.save(ns["Net"]().state_dict(), d / "w.pt")
    _npz(d / "fit.npz", 50000, 0)
    _npz(d / "id.npz", 8000, 1)
    _npz(d / "ood.npz", 8000, 2, shift=30)
    return d


def _run(d, out, *, capped: bool, budget: str | None):
    args = ["layers", "w.pt", "--arch", "net.py:Net", "--num-classes", "3", "--mean", "0.5,0.5,0.5", "--std",
            "0.25,0.25,0.25", "--input-size", "8", "--layers", "block,wide", "--fit", "fit.npz", "--id", "id.npz",
            "--ood", "ood.npz", "--scorers", "mahalanobis,rmds,ncc,energy,msp", "--no-cache", "--no-plot", "-q",
            "--device", "cpu", "--out", out]
    if budget:
        args += ["--memory-budget", budget]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", CAP_MB=str(CAP_MB))
    cmd = [sys.executable, "driver.py", *args] if capped else [sys.executable, "-m", "ncprobe", *args]
    return subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=900)


def test_capped_run_spills_and_equals_the_uncapped_run(setup):
    feature_bytes = (50000 + 8000 + 8000) * (1024 + 1024) * 4  # 'wide' and 'penultimate' (its output), float32
    assert feature_bytes > 2 * CAP_MB * 2**20
    free = _run(setup, "free", capped=False, budget=None)
    assert free.returncode == 0, free.stderr
    in_ram = _run(setup, "in_ram", capped=True, budget="64G")  # features held in RAM: over the cap
    assert in_ram.returncode == 2 and in_ram.stderr.strip().startswith("error: out of memory")
    assert len(in_ram.stderr.strip().splitlines()) == 1 and "--memory-budget" in in_ram.stderr
    capped = _run(setup, "capped", capped=True, budget="64M")  # arrays over 4 MiB spill to disk
    assert capped.returncode == 0, capped.stderr
    for table in ("ood.csv", "collapse.csv"):
        a = pd.read_csv(setup / "free" / table).drop(columns=["run_id", "timestamp"])
        b = pd.read_csv(setup / "capped" / table).drop(columns=["run_id", "timestamp"])
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=1e-9)
