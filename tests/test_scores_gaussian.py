"""Mahalanobis, RMDS and GDA against direct numpy/scipy formulas and pytorch-ood."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from ncprobe.errors import ScoringError
from ncprobe.metrics import auroc
from ncprobe.scores import get_scorer
from ncprobe.stats import ClassStats


def _blobs(n=600, d=8, c=4, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    mix = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    x = spread * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d)) @ mix + 1.0
    test = 1.5 * rng.standard_normal((200, d)) @ mix + 1.0
    return x, y, test


def _direct_md(x, y, z, cov_fn):
    classes = np.unique(y)
    mus = np.stack([x[y == k].mean(0) for k in classes])
    sw = sum((x[y == k] - mus[i]).T @ (x[y == k] - mus[i]) for i, k in enumerate(classes)) / len(x)
    prec = np.linalg.pinv(cov_fn(sw), hermitian=True)
    d = np.stack([np.einsum("ij,jk,ik->i", z - m, prec, z - m) for m in mus], 1)
    return d


def test_mahalanobis_matches_numpy_pinv():
    x, y, z = _blobs()
    want = -_direct_md(x, y, z, lambda s: s).min(1)
    got = get_scorer("mahalanobis").fit(x, y).score(z)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_mahalanobis_reuses_stats():
    x, y, z = _blobs(seed=1)
    stats = ClassStats.from_features(x, y, 4)
    a = get_scorer("mahalanobis").fit(x, y).score(z)
    b = get_scorer("mahalanobis").fit(None, None, stats=stats).score(z)
    c = get_scorer("mahalanobis").fit(x, y, stats=stats).score(z)
    np.testing.assert_allclose(b, a, rtol=1e-12)
    np.testing.assert_allclose(c, a, rtol=1e-12)


def test_mahalanobis_rank_deficient_is_finite_pinv():
    x, y, z = _blobs(d=6, seed=2)
    x = np.hstack(
        [x, x[:, :2] @ np.array([[1.0], [2.0]])]
    )  # 7th feature collinear with the first two
    z = np.hstack([z, z[:, :2] @ np.array([[1.0], [2.0]])])
    got = get_scorer("mahalanobis").fit(x, y).score(z)
    assert np.isfinite(got).all()
    want = -_direct_md(x, y, z, lambda s: s).min(1)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_rmds_matches_numpy():
    x, y, z = _blobs(seed=3)
    md = _direct_md(x, y, z, lambda s: s)
    m0 = x.mean(0)
    prec0 = np.linalg.inv(np.cov(x.T, bias=True))
    md0 = np.einsum("ij,jk,ik->i", z - m0, prec0, z - m0)
    want = -(md - md0[:, None]).min(1)
    np.testing.assert_allclose(get_scorer("rmds").fit(x, y).score(z), want, rtol=1e-9)
    stats = ClassStats.from_features(x, y, 4)
    np.testing.assert_allclose(get_scorer("rmds").fit(stats=stats).score(z), want, rtol=1e-9)


def test_mahalanobis_rmds_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import RMD, Mahalanobis

    x, y, z = _blobs(seed=4)
    n = len(x)
    xt, yt, zt = torch.from_numpy(x).float(), torch.from_numpy(y), torch.from_numpy(z).float()
    # pytorch-ood: 0.5 * min_c distance with the un-normalized scatter (N Sigma_W) + 1e-6 I,
    # float32, outlier score => ours = -2 N * theirs (up to float32 rounding and the ridge)
    theirs = Mahalanobis(None).fit_features(xt, yt).predict_features(zt).double().numpy()
    ours = get_scorer("mahalanobis").fit(x, y).score(z)
    np.testing.assert_allclose(ours, -2 * n * theirs, rtol=2e-4)
    assert auroc(ours[:100], ours[100:]) == pytest.approx(
        auroc(-theirs[:100], -theirs[100:]), abs=1e-3
    )
    # RMD: min_c (d_c - d_0) with both scatters un-normalized => ours = -N * theirs
    theirs = RMD(None).fit_features(xt, yt).predict_features(zt).double().numpy()
    ours = get_scorer("rmds").fit(x, y).score(z)
    np.testing.assert_allclose(ours, -n * theirs, rtol=1e-3, atol=1e-3 * np.abs(ours).max())


def test_gda_matches_scipy_logpdf():
    x, y, z = _blobs(n=400, d=5, c=3, seed=5)
    dens = []
    for k in range(3):
        xk = x[y == k]
        dens.append(multivariate_normal(xk.mean(0), np.cov(xk.T, ddof=1)).logpdf(z))
    want = logsumexp(np.stack(dens, 1), axis=1)
    scorer = get_scorer("gda").fit(x, y)
    np.testing.assert_allclose(scorer.score(z), want, rtol=1e-8)
    assert np.all(scorer.jitter_ == 0)  # well-conditioned: no jitter added


def test_gda_small_batches_equal():
    x, y, z = _blobs(n=300, d=4, c=3, seed=6)
    a = get_scorer("gda").fit(x, y).score(z)
    s = get_scorer("gda").fit(x, y)
    s.batch_size = 7
    np.testing.assert_allclose(s.score(z), a, rtol=1e-13)


def test_gda_collinear_features_use_jitter_and_stay_finite():
    x, y, z = _blobs(n=300, d=5, c=3, seed=7)
    x = np.hstack([x, x[:, :1] - x[:, 1:2]])  # exactly collinear 6th feature
    z = np.hstack([z, z[:, :1] - z[:, 1:2]])
    s = get_scorer("gda").fit(x, y)
    out = s.score(z)
    assert np.isfinite(out).all() and np.isfinite(s.logdet_).all()
    # the fit samples lie on the degenerate subspace, the test cloud does not
    assert s.score(x).mean() > out.mean()
    # any jitter used is on the documented schedule: 0 or 1e-12 * 10^k * mean variance
    for k, jit in zip(s.classes_, s.jitter_, strict=True):
        if jit:
            ratio = jit / np.mean(np.var(x[y == k], axis=0, ddof=1))
            assert np.log10(ratio) == pytest.approx(round(np.log10(ratio)), abs=1e-9)


def test_gda_fewer_samples_than_dims_is_finite():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((12, 20))
    y = np.repeat([0, 1, 2], 4)  # 4 samples per class in 20 dims: singular covariances
    s = get_scorer("gda").fit(x, y)
    assert np.all(s.jitter_ > 0)
    assert np.isfinite(s.score(rng.standard_normal((5, 20)))).all()


def test_one_sample_class():
    x, y, z = _blobs(n=100, d=3, c=3, seed=9)
    y = y.copy()
    y[0] = 5  # class 5 has exactly one sample
    with pytest.raises(ScoringError, match=r"class\(es\) 5 have 1"):
        get_scorer("gda").fit(x, y)
    # shared-covariance scorers handle it (the class mean is the sample itself)
    for name in ("mahalanobis", "rmds"):
        assert np.isfinite(get_scorer(name).fit(x, y).score(z)).all()


def test_constant_features_are_an_error_not_nan():
    x = np.ones((10, 3))
    y = np.repeat([0, 1], 5)
    for name in ("mahalanobis", "gda"):
        with pytest.raises(ScoringError):
            get_scorer(name).fit(x, y)


def test_labels_required():
    x, y, z = _blobs(n=50, seed=10)
    for name in ("mahalanobis", "rmds", "gda"):
        with pytest.raises(ScoringError, match="labels"):
            get_scorer(name).fit(x)
