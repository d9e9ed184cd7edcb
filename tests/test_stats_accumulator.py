"""Streaming ClassStats against one-shot numpy statistics."""

from __future__ import annotations

import numpy as np
import pytest

from ncprobe.errors import ScoringError
from ncprobe.stats import ClassStats


def _direct(x, y, c):
    """One-shot numpy statistics of (x, y): counts, means, within scatter, per-class squared spread."""
    counts = np.bincount(y, minlength=c)
    means = np.zeros((c, x.shape[1]))
    sw = np.zeros((x.shape[1], x.shape[1]))
    sq = np.zeros(c)
    for k in range(c):
        xk = x[y == k]
        if len(xk):
            means[k] = xk.mean(0)
            dk = xk - means[k]
            sw += dk.T @ dk
            sq[k] = (dk**2).sum()
    return counts, means, sw, sq


def _data(seed, n=700, d=13, c=6, offset=50.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    # a large common offset makes naive (sum of squares) accumulation lose digits
    x = offset + 3.0 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))
    return x, y, c


def _assert_close(stats, x, y, c, tol=1e-9):
    counts, means, sw, sq = _direct(x, y, c)
    np.testing.assert_array_equal(stats.counts, counts)
    np.testing.assert_allclose(stats.means, means, rtol=tol, atol=tol)
    np.testing.assert_allclose(stats.within_scatter, sw, rtol=tol, atol=tol * np.abs(sw).max())
    np.testing.assert_allclose(stats.class_sq, sq, rtol=tol)
    np.testing.assert_allclose(stats.sigma_w, sw / len(x), rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", range(5))
def test_random_batch_split_equals_one_shot(seed):
    x, y, c = _data(seed)
    rng = np.random.default_rng(100 + seed)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=rng.integers(1, 25), replace=False))
    stats = ClassStats(c, x.shape[1])
    for xb, yb in zip(np.split(x, cuts), np.split(y, cuts), strict=True):
        stats.update(xb, yb)
    _assert_close(stats, x, y, c)


def test_single_row_batches_and_float32_input():
    x, y, c = _data(1, n=120)
    stats = ClassStats(c, x.shape[1])
    for i in range(len(x)):
        stats.update(x[i : i + 1].astype(np.float32), y[i : i + 1])
    _assert_close(stats, x.astype(np.float32).astype(np.float64), y, c)


def test_torch_input_and_from_features():
    torch = pytest.importorskip("torch")
    x, y, c = _data(2)
    stats = ClassStats.from_features(torch.from_numpy(x), torch.from_numpy(y), c, batch_size=64)
    _assert_close(stats, x, y, c)


@pytest.mark.parametrize("seed", range(3))
def test_merge_equals_single(seed):
    x, y, c = _data(seed, n=900)
    parts = np.split(np.arange(len(x)), [200, 650])
    accs = [ClassStats.from_features(x[p], y[p], c, batch_size=50) for p in parts]
    merged = accs[0].merge(accs[1]).merge(accs[2])
    _assert_close(merged, x, y, c)
    # merge leaves its inputs untouched
    _assert_close(accs[0], x[parts[0]], y[parts[0]], c)


def test_merge_with_disjoint_and_missing_classes():
    x, y, c = _data(3)
    a, b = y < 3, y >= 3
    merged = ClassStats.from_features(x[a], y[a], c).merge(ClassStats.from_features(x[b], y[b], c))
    _assert_close(merged, x, y, c)
    empty = ClassStats(c, x.shape[1])
    _assert_close(empty.merge(merged), x, y, c)


def test_derived_quantities():
    x, y, c = _data(4)
    keep = y != 2  # class 2 absent: excluded from mu_G and Sigma_B
    x, y = x[keep], y[keep]
    s = ClassStats.from_features(x, y, c)
    assert list(s.present) == [0, 1, 3, 4, 5]
    mus = np.stack([x[y == k].mean(0) for k in s.present])
    mu_g = mus.mean(0)
    np.testing.assert_allclose(s.global_mean, mu_g, rtol=1e-12)
    m = mus - mu_g
    np.testing.assert_allclose(s.sigma_b, m.T @ m / len(mus), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s.sample_mean, x.mean(0), rtol=1e-12)
    xc = x - x.mean(0)
    np.testing.assert_allclose(s.total_scatter, xc.T @ xc, rtol=1e-9, atol=1e-7)
    assert np.isnan(s.class_var[2])
    np.testing.assert_allclose(s.class_var[0], ((x[y == 0] - mus[0]) ** 2).sum(1).mean())


def test_errors_are_one_line_scoring_errors():
    s = ClassStats(3, 4)
    bad = np.ones((5, 4))
    bad[[1, 3]] = np.nan
    with pytest.raises(ScoringError, match="2 of 5 feature rows"):
        s.update(bad, np.zeros(5, int))
    with pytest.raises(ScoringError, match="labels must lie in 0..2"):
        s.update(np.ones((2, 4)), np.array([0, 3]))
    with pytest.raises(ScoringError, match="do not match"):
        s.update(np.ones((2, 5)), np.array([0, 1]))
    with pytest.raises(ScoringError, match="one label per row"):
        s.update(np.ones((2, 4)), np.array([0]))
    with pytest.raises(ScoringError, match="no samples"):
        _ = s.sigma_w
    with pytest.raises(ScoringError):
        s.merge(ClassStats(3, 5))
    assert s.n == 0  # failed updates change nothing
