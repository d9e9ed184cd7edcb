"""`ncprobe collapse` on a real public checkpoint, against NC metrics computed directly in numpy.

Uses ../shared/data (skips when absent). A 1,000-image subset by default; set NCPROBE_REAL_N=all
to check the whole 10,000-image training file (about a minute on a 2-core CPU).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from ncprobe.checkpoint import load_checkpoint
from ncprobe.cli import main
from ncprobe.data import load_dataset
from ncprobe.features import extract_features


def reference_nc(h: np.ndarray, y: np.ndarray, w=None, b=None) -> dict:
    """Papyan et al. (2020) metrics written out term by term, with dense pinv/eig and explicit loops."""
    h = h.astype(np.float64)
    classes = np.unique(y)
    c = len(classes)
    mu = np.stack([h[y == k].mean(0) for k in classes])
    mu_g = mu.mean(0)
    m = mu - mu_g
    sw = sum(((h[y == k] - mu[i]).T @ (h[y == k] - mu[i])) for i, k in enumerate(classes)) / len(h)
    sb = m.T @ m / c
    lam, vec = np.linalg.eigh(sb)
    top = np.argsort(lam)[::-1][: c - 1]
    sb_pinv = vec[:, top] @ np.diag(1.0 / lam[top]) @ vec[:, top].T
    norms = np.linalg.norm(m, axis=1)
    cos = np.array([[m[i] @ m[j] / (norms[i] * norms[j]) for j in range(c)] for i in range(c)])
    eq = np.mean([abs(cos[i, j] + 1 / (c - 1)) for i in range(c) for j in range(c) if i != j])
    g = m @ m.T
    etf = np.linalg.norm(g / np.linalg.norm(g) - (np.eye(c) - 1.0 / c) / np.sqrt(c - 1))
    dist = ((h[:, None, :] - mu[None]) ** 2).sum(-1)
    ncc = classes[dist.argmin(1)]
    var = np.array([((h[y == k] - mu[i]) ** 2).sum(1).mean() for i, k in enumerate(classes)])
    pairs = [(i, j) for i in range(c) for j in range(i + 1, c)]
    out = {
        "nc1": np.trace(sw @ sb_pinv) / c,
        "nc2_equinorm": norms.std(ddof=1) / norms.mean(),
        "nc2_equiangular": eq,
        "nc2_etf": etf,
        "ncc_acc": (ncc == y).mean(),
        "tr_ratio": np.trace(sw) / np.trace(sb),
        "cdnv": np.mean([(var[i] + var[j]) / (2 * ((mu[i] - mu[j]) ** 2).sum()) for i, j in pairs]),
    }
    if w is not None:
        out["nc3"] = np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2
        out["nc4"] = ((h @ w.T + b).argmax(1) != ncc).mean()
    return out


@pytest.mark.shared
def test_collapse_on_public_resnet20_matches_numpy(shared_data, tmp_path, capsys):
    n = os.environ.get("NCPROBE_REAL_N", "1000")
    spec = str(shared_data / "cifar10_train.npz") + ("" if n == "all" else f"@n={int(n)}")
    ckpt_path = shared_data / "checkpoints" / "resnet20-12fca82f.th"
    cache = tmp_path / "cache"
    main(["collapse", str(ckpt_path), "--data", spec, "--out", str(tmp_path), "--cache", str(cache), "-q"])
    table = pd.read_csv(tmp_path / "collapse.csv").set_index("layer")
    assert list(table.index) == ["layer1", "layer2", "layer3", "penultimate"]
    ckpt = load_checkpoint(ckpt_path)
    fs = extract_features(ckpt, load_dataset(spec), cache_dir=cache, progress=False)
    assert fs.from_cache  # the CLI run wrote it; this reads the same arrays
    w, b = ckpt.head_weights()
    for layer in table.index:
        ref = reference_nc(fs[layer], fs.labels, *((w, b) if layer == "penultimate" else (None, None)))
        for key, value in ref.items():
            assert table.loc[layer, key] == pytest.approx(value, rel=1e-6, abs=1e-12), (layer, key)
    # the second run is served from the cache
    main(["collapse", str(ckpt_path), "--data", spec, "--cache", str(cache), "-q"])
    assert "served from the cache" in capsys.readouterr().out
