"""kNN score against brute-force numpy and pytorch-ood's KNN."""

from __future__ import annotations

import numpy as np
import pytest

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from ncprobe.scores.neighbours import kth_largest_inner_product


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


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
@pytest.mark.parametrize("k", [1, 5, 50, 399, 400])
def test_matches_brute_force(k, backend):
    fit, z = _data(k)
    s = get_scorer("knn", k=k, backend=backend).fit(fit)
    assert s.backend_ == backend
    np.testing.assert_allclose(s.score(z), _brute(fit, z, k), atol=1e-6)


@pytest.mark.parametrize("n_fit,k", [(1000, 50), (997, 7), (60, 60), (5000, 1), (333, 100)])
def test_group_max_engine_is_exact_with_ties(n_fit, k):
    rng = np.random.default_rng(n_fit + k)
    # coarse values: many exact ties among similarities
    fit = rng.integers(-2, 3, (n_fit, 6)).astype(np.float32)
    q = rng.integers(-2, 3, (300, 6)).astype(np.float32)
    want = -np.sort(-(q @ fit.T), axis=1)[:, k - 1]
    np.testing.assert_array_equal(kth_largest_inner_product(q, fit, k), want)


def test_auto_backend_choice():
    fit, z = _data(5)
    backend = get_scorer("knn", k=3).fit(fit).backend_
    assert backend in ("numpy", "faiss-gpu", "torch-cuda") or backend.startswith("faiss-gpux")  # x N: sharded


def test_batches_blocks_workers_and_float32_input(monkeypatch):
    import ncprobe.scores.neighbours as nb

    fit, z = _data(1)
    s = get_scorer("knn", k=7).fit(fit.astype(np.float32))
    s.batch_size = 13
    want = _brute(fit, z, 7)
    np.testing.assert_allclose(s.score(z.astype(np.float32)), want, atol=1e-6)
    s._engine.block_rows = 9  # many blocks spread over several workers
    for workers in (1, 3):
        monkeypatch.setattr(nb, "_blas_threads", lambda w=workers: w)
        s.batch_size = 1000
        np.testing.assert_allclose(s.score(z), want, atol=1e-6)


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
    with pytest.raises(ScoringError, match="backend"):
        get_scorer("knn", backend="annoy")
    assert repr(get_scorer("knn", k=3)) == "KNN(k=3, backend='auto', device='auto')"
