"""kNN score against brute-force numpy and pytorch-ood's KNN."""

from __future__ import annotations

import numpy as np
import pytest

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer


def _brute(fit, z, k):
    f = fit / np.linalg.norm(fit, axis=1, keepdims=True).clip(1e-12)
    q = z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)
    d = np.linalg.norm(q[:, None, :] - f[None, :, :], axis=-1)
    return -np.sort(d, axis=1)[:, k - 1]


def _data(seed=0, n=400, d=16):
    rng = np.random.default_rng(seed)
    fit = rng.standard_normal((n, d)) + 2.0
    z = np.vstack([rng.standard_normal((100, d)) + 2.0, rng.standard_normal((100, d))])
    return fit, z


@pytest.mark.parametrize("k", [1, 5, 50])
def test_matches_brute_force(k):
    fit, z = _data(k)
    got = get_scorer("knn", k=k).fit(fit).score(z)
    np.testing.assert_allclose(got, _brute(fit, z, k), atol=1e-6)


def test_batches_and_float32_input():
    fit, z = _data(1)
    s = get_scorer("knn", k=7).fit(fit.astype(np.float32))
    s.batch_size = 13
    np.testing.assert_allclose(s.score(z.astype(np.float32)), _brute(fit, z, 7), atol=1e-6)


def test_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import KNN

    fit, z = _data(2)
    theirs = KNN(None, k=10).fit_features(
        torch.from_numpy(fit).float(), torch.zeros(len(fit), dtype=torch.long)
    )
    theirs = theirs.predict_features(torch.from_numpy(z).float()).numpy()
    np.testing.assert_allclose(get_scorer("knn", k=10).fit(fit).score(z), -theirs, atol=1e-5)


def test_k_larger_than_fit_set_is_clamped_with_warning():
    fit, z = _data(3, n=20)
    with pytest.warns(UserWarning, match="exceeds the 20 fit samples"):
        s = get_scorer("knn", k=50).fit(fit)
    assert s.k_ == 20
    np.testing.assert_allclose(s.score(z), _brute(fit, z, 20), atol=1e-6)


def test_zero_rows_use_exact_l2():
    fit, z = _data(4, n=60)
    fit[:3] = 0.0  # all-zero fit rows: similarity order != distance order
    z[:2] = 0.0
    got = get_scorer("knn", k=4).fit(fit).score(z)
    np.testing.assert_allclose(got, _brute(fit, z, 4), atol=1e-6)


def test_params_and_errors():
    with pytest.raises(ScoringError, match="k >= 1"):
        get_scorer("knn", k=0)
    with pytest.raises(ScoringError, match="device"):
        get_scorer("knn", device="tpu")
    assert repr(get_scorer("knn", k=3)) == "KNN(k=3, device='auto')"
