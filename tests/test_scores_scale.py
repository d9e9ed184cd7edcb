"""Scorers at scale: memory estimates and refusals, GDA's dimension cap, the torch path of the
Gaussian scorers, kNN's fit_fraction and IVF index with its measured recall."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from ncprobe.budget import using_memory_budget
from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from ncprobe.scores.base import params_string
from ncprobe.scores.gaussian import gda_fit_bytes


def _blobs(n=800, d=8, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    mix = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    x = 3.0 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d)) @ mix + 1.0
    z = 1.5 * rng.standard_normal((300, d)) @ mix + 1.0
    return x, y, z


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _brute_knn(fit, z, k):
    d = np.linalg.norm(_unit(z)[:, None, :] - _unit(fit)[None, :, :], axis=-1)
    return -np.sort(d, axis=1)[:, k - 1]


# ----------------------------------------------------------------------------- GDA memory
def test_gda_refuses_above_budget_in_one_line():
    x, y, _ = _blobs()
    with using_memory_budget("1K"), pytest.raises(ScoringError) as err:
        get_scorer("gda").fit(x, y)
    msg = str(err.value)
    assert "\n" not in msg
    for word in ("gda", "1.0 KiB", "mahalanobis", "rmds", "max_dim"):
        assert word in msg


def test_gda_estimate_is_the_allocation():
    x, y, z = _blobs(n=3000, d=40, c=30, seed=1)
    k, m, n_max = 30, 40, int(np.bincount(y).max())
    est = gda_fit_bytes(m, k, n_max, n_rows=len(x))
    get_scorer("gda").fit(x, y)  # first call: lazy imports and caches, not the fit's arrays
    s = get_scorer("gda")
    tracemalloc.start()
    s.fit(x, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert s.memory_estimate_ == est
    # kept arrays: exactly the closed form's first terms
    assert s.chol_.nbytes + s.means_.nbytes == 8 * (k * m * m + k * m)
    assert peak <= est <= 1.5 * peak


def test_gda_max_dim_matches_projected_scipy():
    x, y, z = _blobs(n=900, d=10, c=3, seed=2)
    m = 4
    # Sigma_W, its leading eigenvectors, the projected Gaussians: all computed directly
    mus = np.stack([x[y == c].mean(0) for c in range(3)])
    sw = sum((x[y == c] - mus[c]).T @ (x[y == c] - mus[c]) for c in range(3)) / len(x)
    lam, v = np.linalg.eigh(sw)
    p = v[:, np.argsort(lam)[::-1][:m]]
    px, pz = (x - x.mean(0)) @ p, (z - x.mean(0)) @ p
    want = logsumexp(np.stack([multivariate_normal(px[y == c].mean(0), np.cov(px[y == c].T)).logpdf(pz)
                               for c in range(3)], 1), axis=1)
    s = get_scorer("gda", max_dim=m).fit(x, y)
    np.testing.assert_allclose(s.score(z), want, rtol=1e-9)
    assert params_string(s.effective_params()) == f"jitter=1e-12,max_dim={m}"
    assert s.memory_estimate_ == gda_fit_bytes(10, 3, int(np.bincount(y).max()), m, len(x))
    # a cap at or above the width changes nothing, not even the params column
    plain = get_scorer("gda").fit(x, y)
    capped = get_scorer("gda", max_dim=10).fit(x, y)
    np.testing.assert_array_equal(capped.score(z), plain.score(z))
    assert params_string(capped.effective_params()) == params_string(plain.effective_params()) == "jitter=1e-12"


def test_gda_float32_memmap_is_read_per_class(tmp_path):
    x, y, z = _blobs(seed=3)
    path = tmp_path / "x.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    ref = get_scorer("gda").fit(mm.astype(np.float64), y).score(z)
    np.testing.assert_array_equal(get_scorer("gda").fit(np.memmap(path, np.float32, "r", shape=x.shape), y).score(z),
                                  ref)


@pytest.mark.parametrize("name,params", [("gda", {}), ("gda", {"max_dim": 5}), ("mahalanobis", {}), ("rmds", {})])
def test_torch_path_on_cpu_equals_numpy(name, params):
    x, y, z = _blobs(n=1200, d=9, c=5, seed=4)
    a = get_scorer(name, **params).fit(x, y)
    b = get_scorer(name, backend="torch", device="cpu", **params).fit(x, y)
    assert a.backend_ == "numpy" and b.backend_ == "torch-cpu"
    np.testing.assert_allclose(b.score(z), a.score(z), rtol=1e-9)
    b.batch_size = 17  # several batches, several class chunks
    np.testing.assert_allclose(b.score(z), a.score(z), rtol=1e-9)


def test_gaussian_backend_errors():
    with pytest.raises(ScoringError, match="backend"):
        get_scorer("gda", backend="jax")
    with pytest.raises(ScoringError, match="max_dim"):
        get_scorer("gda", max_dim=0)


# ----------------------------------------------------------------------------- kNN at scale
def _fit_set(n=600, d=12, seed=5):
    rng = np.random.default_rng(seed)
    fit = rng.standard_normal((n, d)) + 1.0
    z = np.vstack([rng.standard_normal((80, d)) + 1.0, rng.standard_normal((80, d))])
    return fit, z


def test_fit_fraction_one_is_the_current_scorer():
    fit, z = _fit_set()
    a = get_scorer("knn", k=7).fit(fit)
    b = get_scorer("knn", k=7, fit_fraction=1.0, seed=3).fit(fit)
    np.testing.assert_array_equal(a.score(z), b.score(z))
    assert params_string(b.effective_params()) == "k=7"
    assert repr(get_scorer("knn", k=7, fit_fraction=1.0)) == "KNN(k=7, backend='auto', device='auto')"


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_fit_fraction_is_exact_knn_on_the_seeded_subset(backend):
    fit, z = _fit_set(seed=6)
    frac, seed, k = 0.25, 11, 5
    keep = np.sort(np.random.default_rng(seed).choice(len(fit), round(frac * len(fit)), replace=False))
    with pytest.warns(UserWarning, match="seeded 0.25 of the fit set"):
        s = get_scorer("knn", k=k, fit_fraction=frac, seed=seed, backend=backend).fit(fit)
    np.testing.assert_array_equal(s.fit_index_, keep)
    np.testing.assert_allclose(s.score(z), _brute_knn(fit[keep], z, k), atol=1e-6)
    assert params_string(s.effective_params()) == f"k={k},fit_fraction=0.25,seed={seed}"


def test_ivf_probing_every_list_is_exact():
    fit, z = _fit_set(n=800, seed=7)
    with pytest.warns(UserWarning, match="IVF"):
        s = get_scorer("knn", k=9, index="ivf", nlist=8, nprobe=8).fit(fit)
    assert s.backend_.startswith("faiss-ivf") and s.recall_ == 1.0
    np.testing.assert_allclose(s.score(z), _brute_knn(fit, z, 9), atol=1e-6)
    assert params_string(s.effective_params()) == "k=9,index=ivf,nlist=8,nprobe=8,recall=1"


def test_ivf_recall_is_an_independent_count():
    fit, z = _fit_set(n=3000, d=16, seed=8)
    k = 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = get_scorer("knn", k=k, index="ivf", nlist=30, nprobe=2, seed=4).fit(fit)
    assert 0.0 <= s.recall_ <= 1.0
    q_idx = s.recall_queries_
    assert q_idx.size == 1000
    f = _unit(fit)
    sims = f[q_idx] @ f.T  # float64, leave-one-out
    sims[np.arange(q_idx.size), q_idx] = -np.inf
    exact = np.argsort(-sims, axis=1)[:, :k]
    _, found = s._engine.search(f[q_idx].astype(np.float32), k + 1)
    hits = sum(len(set(row[row != qi][:k].tolist()) & set(e.tolist())) for row, qi, e in zip(found, q_idx, exact, strict=True))
    assert s.recall_ == pytest.approx(hits / (q_idx.size * k), abs=1e-12)
    assert s.recall_ < 1.0  # 2 of 30 lists: some neighbours are missed


def test_ivf_rows_with_too_few_candidates_fall_back_to_exact():
    fit, z = _fit_set(n=800, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = get_scorer("knn", k=150, index="ivf", nlist=20, nprobe=1).fit(fit)  # ~40 rows per list < k
    np.testing.assert_allclose(s.score(z), _brute_knn(fit, z, 150), atol=1e-6)


def test_auto_index_switches_to_ivf_above_the_threshold(monkeypatch):
    import ncprobe.scores.neighbours as nb

    fit, z = _fit_set(n=2000, seed=10)
    assert get_scorer("knn", k=5).fit(fit).index_ == "exact"
    monkeypatch.setattr(nb, "_EXACT_MAX_VALUES", 1000)
    with pytest.warns(UserWarning, match=r"recall@5 = "):
        s = get_scorer("knn", k=5).fit(fit)
    assert s.index_ == "ivf" and "index=ivf" in params_string(s.effective_params())


def test_knn_refuses_above_budget_in_one_line():
    fit, _ = _fit_set()
    with using_memory_budget("64K"), pytest.raises(ScoringError) as err:
        get_scorer("knn", k=5).fit(fit)
    assert "\n" not in str(err.value) and "fit_fraction" in str(err.value)


def test_knn_torch_backend_on_cpu_is_exact():
    fit, z = _fit_set(seed=12)
    s = get_scorer("knn", k=6, backend="torch", device="cpu").fit(fit)
    assert s.backend_ == "torch-cpu"
    np.testing.assert_allclose(s.score(z), _brute_knn(fit, z, 6), atol=1e-6)


def test_knn_scale_param_errors():
    for bad in ({"fit_fraction": 0.0}, {"fit_fraction": 1.5}, {"index": "hnsw"}, {"nlist": 0}, {"nprobe": 0}):
        with pytest.raises(ScoringError):
            get_scorer("knn", **bad)


def test_several_gpus_shard_the_faiss_index_and_one_gpu_clones_it():
    """The wiring of faiss's multi-GPU path (no GPU here): a fake faiss records what was asked."""
    from types import SimpleNamespace

    from ncprobe.scores.neighbours import _to_gpus

    calls = []

    class Options:
        shard = False

    def fake(ngpu):
        return SimpleNamespace(
            get_num_gpus=lambda: ngpu, GpuMultipleClonerOptions=Options,
            index_cpu_to_all_gpus=lambda index, co, ngpu: calls.append(("all", co.shard, ngpu)) or "sharded",
            StandardGpuResources=lambda: "res",
            index_cpu_to_gpu=lambda res, dev, index: calls.append(("one", res, dev)) or "cloned")

    owner = SimpleNamespace()
    assert _to_gpus(fake(4), "flat", owner) == ("sharded", "faiss-gpux4")
    assert _to_gpus(fake(1), "flat", owner, ivf=True) == ("cloned", "faiss-ivf-gpu")
    assert calls == [("all", True, 4), ("one", "res", 0)] and owner._gpu_res == "res"
