"""NC metrics against closed forms (simplex ETF) and a direct numpy computation."""

from __future__ import annotations

import numpy as np
import pytest

from ncprobe.errors import ScoringError
from ncprobe.stats import ClassStats, collapse_metrics
from ncprobe.stats.collapse import nc1, ncc_counts


def _direct_metrics(x, y, w, b):
    """Papers.md section 4 computed the slow, obvious way with full d x d matrices."""
    classes = np.unique(y)
    c = len(classes)
    mus = np.stack([x[y == k].mean(0) for k in classes])
    mu_g = mus.mean(0)
    m = mus - mu_g
    sw = sum((x[y == k] - mus[i]).T @ (x[y == k] - mus[i]) for i, k in enumerate(classes)) / len(x)
    sb = m.T @ m / c
    lam, v = np.linalg.eigh(sb)
    lam, v = lam[::-1][: c - 1], v[:, ::-1][:, : c - 1]
    sb_pinv = v @ np.diag(1 / lam) @ v.T
    norms = np.linalg.norm(m, axis=1)
    cos = np.array([[m[i] @ m[j] / norms[i] / norms[j] for j in range(c)] for i in range(c)])
    eq = np.mean([abs(cos[i, j] + 1 / (c - 1)) for i in range(c) for j in range(c) if i != j])
    g = m @ m.T
    etf = np.linalg.norm(
        g / np.linalg.norm(g, "fro") - (np.eye(c) - np.ones((c, c)) / c) / np.sqrt(c - 1)
    )
    wp = w[classes]
    var = [((x[y == k] - mus[i]) ** 2).sum(1).mean() for i, k in enumerate(classes)]
    cd = np.mean(
        [
            (var[i] + var[j]) / (2 * np.sum((mus[i] - mus[j]) ** 2))
            for i in range(c)
            for j in range(i + 1, c)
        ]
    )
    dists = ((x[:, None, :] - mus[None]) ** 2).sum(-1)
    ncc = classes[dists.argmin(1)]
    pred = (x @ w.T + b).argmax(1)
    return {
        "nc1": np.trace(sw @ sb_pinv) / c,
        "nc2_equinorm": norms.std(ddof=1) / norms.mean(),
        "nc2_equiangular": eq,
        "nc2_etf": etf,
        "nc3": np.linalg.norm(wp / np.linalg.norm(wp) - m / np.linalg.norm(m)) ** 2,
        "nc4": np.mean(pred != ncc),
        "ncc_acc": np.mean(ncc == y),
        "tr_ratio": np.trace(sw) / np.trace(sb),
        "cdnv": cd,
    }


@pytest.mark.parametrize("seed,d,c", [(0, 30, 5), (1, 8, 10), (2, 64, 3), (3, 3, 7)])
def test_against_direct_numpy(seed, d, c):
    rng = np.random.default_rng(seed)
    n = 400
    y = rng.integers(0, c, n)
    x = 2.0 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d)) + 5.0
    w, b = rng.standard_normal((c, d)), rng.standard_normal(c)
    stats = ClassStats.from_features(x, y, c, batch_size=37)
    got = collapse_metrics(stats, x, y, head=(w, b), batch_size=29)
    want = _direct_metrics(x, y, w, b)
    if d < c - 1:
        # rank(Sigma_B) = d < C-1: the direct top-(C-1) inverse would divide by ~0 eigenvalues
        lam, v = np.linalg.eigh(stats.sigma_b)
        want["nc1"] = np.trace(stats.sigma_w @ v @ np.diag(1 / lam) @ v.T) / c
    for key, val in want.items():
        assert got[key] == pytest.approx(val, rel=1e-9, abs=1e-12), key
    assert got["num_classes_used"] == c


def test_nc1_equals_pinv_when_full_rank():
    rng = np.random.default_rng(5)
    c, d = 6, 40
    y = rng.integers(0, c, 300)
    x = rng.standard_normal((c, d))[y] + 0.5 * rng.standard_normal((300, d))
    s = ClassStats.from_features(x, y, c)
    want = np.trace(s.sigma_w @ np.linalg.pinv(s.sigma_b, rcond=1e-10, hermitian=True)) / c
    assert nc1(s) == pytest.approx(want, rel=1e-8)


def _etf_features(c=5, d=12, per_class=4, scale=3.0, seed=0):
    """Features exactly on a rotated, scaled, offset simplex ETF, no within-class spread."""
    rng = np.random.default_rng(seed)
    etf = np.sqrt(c / (c - 1)) * (np.eye(c) - np.ones((c, c)) / c)  # rows: unit-norm ETF vertices
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    m = scale * etf @ q[:c]  # (c, d) centred means
    offset = 7.0 * q[c]  # orthogonal to the span of m
    y = np.repeat(np.arange(c), per_class)
    return m[y] + offset, y, m, offset


def test_simplex_etf_closed_form():
    x, y, m, offset = _etf_features()
    c = m.shape[0]
    stats = ClassStats.from_features(x, y, c, batch_size=3)
    got = collapse_metrics(stats, x, y, head=(m, np.zeros(c)))
    assert got["nc1"] == pytest.approx(0, abs=1e-12)
    assert got["nc2_etf"] == pytest.approx(0, abs=1e-12)
    assert got["nc2_equiangular"] == pytest.approx(0, abs=1e-12)
    assert got["nc2_equinorm"] == pytest.approx(0, abs=1e-12)
    assert got["ncc_acc"] == 1.0
    assert got["nc3"] == pytest.approx(0, abs=1e-12)  # W equal to the centred class means
    assert got["nc4"] == 0.0
    assert got["tr_ratio"] == pytest.approx(0, abs=1e-12)
    assert got["cdnv"] == pytest.approx(0, abs=1e-12)
    # Sigma_B of a unit ETF scaled by s: eigenvalues s^2/(C-1), C-1 times
    lam = np.linalg.eigvalsh(stats.sigma_b)[::-1][: c - 1]
    np.testing.assert_allclose(lam, 9.0 / (c - 1), rtol=1e-12)


def test_known_within_spread_gives_known_nc1():
    # ETF means (scale s) plus within-class noise isotropic in the mean span with variance v per
    # direction: Tr(Sigma_W Sigma_B^+)/C = (C-1) * v / (s^2/(C-1)) / C exactly for these samples.
    x, y, m, _ = _etf_features(c=4, d=6, per_class=1, scale=2.0)
    c = 4
    # per class, add +e and -e along an orthonormal basis of the mean span: zero mean, known scatter
    basis = np.linalg.svd(m, full_matrices=False)[2][: c - 1]
    eps = 0.1
    xs, ys = [], []
    for k in range(c):
        for e in basis:
            xs += [x[k] + eps * e, x[k] - eps * e]
            ys += [k, k]
    xs, ys = np.array(xs), np.array(ys)
    stats = ClassStats.from_features(xs, ys, c)
    v = 2 * eps**2 / (2 * (c - 1))  # variance along each basis direction
    want = (c - 1) * v / (4.0 / (c - 1)) / c
    assert nc1(stats) == pytest.approx(want, rel=1e-12)


def test_absent_classes_are_excluded():
    rng = np.random.default_rng(7)
    c, d = 6, 10
    y = rng.choice([0, 2, 3, 5], 200)
    x = rng.standard_normal((c, d))[y] + 0.3 * rng.standard_normal((200, d))
    w, b = rng.standard_normal((c, d)), rng.standard_normal(c)
    got = collapse_metrics(ClassStats.from_features(x, y, c), x, y, head=(w, b))
    want = _direct_metrics(x, y, w, b)
    for key, val in want.items():
        assert got[key] == pytest.approx(val, rel=1e-9), key
    assert got["num_classes_used"] == 4


def test_without_head_or_features():
    x, y, m, _ = _etf_features()
    got = collapse_metrics(ClassStats.from_features(x, y, 5))
    assert got["nc3"] is None and got["nc4"] is None and got["ncc_acc"] is None
    got = collapse_metrics(ClassStats.from_features(x, y, 5), x, y)
    assert got["ncc_acc"] == 1.0 and got["nc4"] is None


def test_ncc_counts_sum_over_chunks():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 4, 300)
    x = rng.standard_normal((4, 6))[y] + rng.standard_normal((300, 6))
    s = ClassStats.from_features(x, y, 4)
    whole = ncc_counts(s, x, y, batch_size=1000)
    parts = [ncc_counts(s, x[i : i + 70], y[i : i + 70], batch_size=16) for i in range(0, 300, 70)]
    assert whole["ncc_correct"] == sum(p["ncc_correct"] for p in parts)
    mus = np.stack([x[y == k].mean(0) for k in range(4)])
    assert whole["ncc_correct"] == np.sum(((x[:, None] - mus) ** 2).sum(-1).argmin(1) == y)


def test_errors():
    s = ClassStats.from_features(np.ones((3, 2)), np.zeros(3, int), 2)
    with pytest.raises(ScoringError, match="at least 2 classes"):
        collapse_metrics(s)
    x, y, m, _ = _etf_features()
    s = ClassStats.from_features(x, y, 5)
    with pytest.raises(ScoringError, match="expected"):
        collapse_metrics(s, head=(np.ones((3, 12)), np.zeros(3)))
    with pytest.raises(ScoringError, match="labels"):
        collapse_metrics(s, x)
