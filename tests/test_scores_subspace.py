"""ViM and NECO against direct numpy/sklearn computations and pytorch-ood's ViM."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from ncprobe.scores.subspace import vim_default_dim


def _problem(seed=0, n=500, d=24, c=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    means = 3.0 * rng.standard_normal((c, d))
    x = np.abs(means[y] + rng.standard_normal((n, d)))  # ReLU-like, non-negative
    w = means + 0.3 * rng.standard_normal((c, d))
    b = rng.standard_normal(c)
    z = np.abs(
        np.vstack(
            [
                means[rng.integers(0, c, 100)] + rng.standard_normal((100, d)),
                2 * rng.standard_normal((100, d)),
            ]
        )
    )
    return x, y, w, b, z


def _vim_direct(x, w, b, z, dim):
    u = -np.linalg.pinv(w) @ b
    xc = x - u
    lam, v = np.linalg.eigh(xc.T @ xc / len(x))
    ns = v[:, np.argsort(lam)[::-1][dim:]]
    alpha = (x @ w.T + b).max(1).mean() / np.linalg.norm(xc @ ns, axis=1).mean()
    return logsumexp(z @ w.T + b, axis=1) - alpha * np.linalg.norm((z - u) @ ns, axis=1)


def test_vim_matches_numpy():
    x, y, w, b, z = _problem()
    for dim in (None, 4):
        got = get_scorer("vim", dim=dim).fit(x, head=(w, b)).score(z)
        np.testing.assert_allclose(got, _vim_direct(x, w, b, z, dim or 12), rtol=1e-9, atol=1e-9)


def test_vim_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import ViM

    x, y, w, b, z = _problem(seed=1)
    det = ViM(None, d=8, w=torch.from_numpy(w), b=torch.from_numpy(b))
    det.fit_features(torch.from_numpy(x).float(), torch.from_numpy(y))
    theirs = det.predict_features(torch.from_numpy(z).float()).double().numpy()
    ours = get_scorer("vim", dim=8).fit(x, y, head=(w, b)).score(z)
    # pytorch-ood returns vlogit - energy in float32
    np.testing.assert_allclose(ours, -theirs, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


def test_vim_default_dim_rule():
    assert [vim_default_dim(d) for d in (64, 512, 768, 1024, 2048, 4096)] == [
        32,
        256,
        512,
        512,
        1000,
        1000,
    ]


def test_neco_matches_sklearn_pipeline():
    x, y, w, b, z = _problem(seed=2)
    ss = StandardScaler().fit(x)
    pca = PCA(x.shape[1]).fit(ss.transform(x))
    zs = ss.transform(z)
    for dim in (None, 3):
        k = dim or 4  # default: C - 1
        want = np.linalg.norm(pca.transform(zs)[:, :k], axis=1) / np.linalg.norm(zs, axis=1)
        got = get_scorer("neco", dim=dim).fit(x, head=(w, b)).score(z)
        np.testing.assert_allclose(got, want, rtol=1e-8)
    got = get_scorer("neco", dim=3, maxlogit=True).fit(x, head=(w, b)).score(z)
    want3 = np.linalg.norm(pca.transform(zs)[:, :3], axis=1) / np.linalg.norm(zs, axis=1)
    np.testing.assert_allclose(got, want3 * (z @ w.T + b).max(1), rtol=1e-8)


def test_neco_row_at_fit_mean_scores_one():
    x, y, w, b, z = _problem(seed=3)
    got = get_scorer("neco").fit(x, head=(w, b)).score(x.mean(0, keepdims=True))
    assert got.tolist() == [1.0]


def test_head_required_and_checked():
    x, y, w, b, z = _problem(seed=4)
    for name in ("vim", "neco"):
        with pytest.raises(ScoringError, match="head"):
            get_scorer(name).fit(x)
        with pytest.raises(ScoringError, match="do not fit features of width"):
            get_scorer(name).fit(x, head=(w[:, :5], b))
    with pytest.raises(ScoringError, match="principal dimension"):
        get_scorer("vim", dim=24).fit(x, head=(w, b))
    with pytest.raises(ScoringError, match="exceeds the feature width"):
        get_scorer("neco", dim=30).fit(x, head=(w, b))
