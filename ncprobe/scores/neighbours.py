"""Deep nearest-neighbour score (kNN) with exact search.

Two exact search engines find the k-th largest inner product between L2-normalized queries and
fit features (for unit vectors the k-th largest similarity is the k-th smallest distance):

* ``numpy`` (CPU default for fit sets up to ~130k rows): queries in blocks; per block one float32
  GEMM against all fit rows, then an exact *group-max filter* instead of a heap over every
  similarity. The fit columns are split into G groups of g (g ~ sqrt(n_fit / k)); with lb the k-th
  largest group maximum, the k-th largest similarity is >= lb (k groups each hold an element >= lb)
  and every similarity >= it lies in one of the k groups with the largest maxima. So the k-th
  largest similarity of the row is the k-th largest among those k*g candidates: one vectorized max
  pass over the block plus small partitions, instead of a heap update per similarity. Blocks are
  spread over the BLAS thread count (each worker's GEMM single-threaded), so the selection runs in
  parallel too.
* ``faiss``: ``IndexFlatIP`` (exact, BLAS + heaps), on a GPU when faiss has GPU support and sees a
  GPU (``device='auto'``); used on the CPU for larger fit sets.

* ``torch``: blocked float32 products and ``topk`` in torch, on the GPU when CUDA is present and
  faiss has no GPU support (``backend='auto'``).

The k-th neighbour's distance is then recomputed from the two unit vectors (float64 sum).

At scale (ImageNet: 1.28M fit rows): ``fit_fraction`` keeps a seeded subset of the fit set (Sun et
al. use 1 % on ImageNet); ``index='auto'`` is exact search up to 2^28 fit values (1 GiB of float32:
131k rows at d = 2048) on the CPU and at any size on a GPU, a faiss IVF index (``IndexIVFFlat``,
inner product) beyond, whose recall against exact search is measured at fit time on a seeded sample
of fit rows (leave-one-out) and reported (``recall_``, the ``params`` column, a warning). Before
anything is allocated the index's memory is estimated and refused above the budget
(:mod:`ncprobe.budget`).
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..budget import check_memory, format_bytes
from ..errors import ScoringError
from ..stats._threads import blas_controller, single_blas_thread
from ..validation import as_numpy
from .base import Scorer
from .registry import register_scorer

__all__ = ["KNN", "faiss_gpu_available", "kth_largest_inner_product", "exact_top_k", "knn_fit_bytes",
           "fit_subset"]

#: auto: exact search on the CPU up to this many fit values (n_fit * d), an IVF index beyond
_EXACT_MAX_VALUES = 1 << 28
#: fit rows whose IVF neighbours are checked against exact search (leave-one-out) to measure recall
_RECALL_QUERIES = 1000
#: fixed working memory of a search (query blocks of all workers, faiss buffers)
_SEARCH_WORK_BYTES = 4 * 4 * (1 << 24)

#: float32 elements of one query block's similarity buffer (one worker): 64 MB
_BLOCK_ELEMS = 1 << 24
_MAX_BLOCK_ROWS = 1024
_MIN_BLOCK_ROWS = 128


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise ScoringError(
            "the knn scorer needs faiss; pip install faiss-cpu (or faiss-gpu-cu12)"
        ) from None
    return faiss


def _to_gpus(faiss, index, owner, ivf: bool = False):
    """``index`` on the GPU, or sharded over every visible GPU when there are several (each holds
    1/G of the fit rows; faiss merges the per-shard top-k, so the search stays exact for a flat
    index). Returns (index, backend name)."""
    kind = "faiss-ivf-gpu" if ivf else "faiss-gpu"
    gpus = faiss.get_num_gpus()
    if gpus > 1:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        return faiss.index_cpu_to_all_gpus(index, co=options, ngpu=gpus), f"{kind}x{gpus}"
    owner._gpu_res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(owner._gpu_res, 0, index), kind


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    try:
        faiss = _faiss()
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken GPU runtime
        return False


def _blas_threads() -> int:
    """The BLAS thread count in force (OPENBLAS_NUM_THREADS / threadpool_limits respected)."""
    try:
        n = [lib.num_threads for lib in blas_controller().lib_controllers if lib.user_api == "blas"]
        if n:
            return max(1, max(n))
    except Exception:  # pragma: no cover - threadpoolctl missing/broken
        pass
    cpus = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return max(1, len(cpus))


def _normalize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows over their L2 norm (zero rows stay zero), and the norms (float64)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    out = x / np.maximum(norms, 1e-12).astype(x.dtype)[:, None]
    return out, norms


class _GroupMaxSearch:
    """Exact k-th largest inner product of each query with the fit rows (see module docstring).

    Fit rows are laid out as g slabs of G rows (row j*G + i is member j of group i, padded with
    rows scoring -inf). Per query block, slab j's products go to ``buf[j]`` (n, G) and are folded
    into the running group maxima right away, while still in cache.
    """

    def __init__(self, fit: np.ndarray, k: int):
        n_fit, d = fit.shape
        g = max(1, round(math.sqrt(n_fit / k)))
        n_groups = -(-n_fit // g)
        if n_groups < k:
            g, n_groups = 1, n_fit
        self.k, self.g, self.n_groups, self.n_fit = k, g, n_groups, n_fit
        self.width = g * n_groups
        self.n_pad = self.width - n_fit  # padded rows: the tail of the last slab
        padded = np.zeros((self.width, d), dtype=np.float32)
        padded[:n_fit] = fit
        self.slabs = padded.reshape(g, n_groups, d)
        # small blocks keep the selection passes cache-friendly; larger ones at high d help the GEMM
        # (about 16k * d similarities per block: ~100 rows at d = 64, ~800 at d = 512 for 10k fit rows)
        self.block_rows = max(64, min(_MAX_BLOCK_ROWS, ((1 << 14) * d) // self.width))

    @staticmethod
    def suitable(n_fit: int) -> bool:
        return _BLOCK_ELEMS // max(n_fit, 1) >= _MIN_BLOCK_ROWS

    def _block(
        self, q: np.ndarray, buf: np.ndarray, gmax: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n = q.shape[0]
        g, n_groups, k = self.g, self.n_groups, self.k
        sims = buf[: g * n * n_groups].reshape(g, n, n_groups)  # contiguous for any n
        gmax = gmax[:n]
        for j in range(g):
            np.matmul(q, self.slabs[j].T, out=sims[j])
            if j == g - 1 and self.n_pad:
                sims[j, :, n_groups - self.n_pad :] = -np.inf
            if j == 0:
                np.copyto(gmax, sims[0])
            else:
                np.maximum(gmax, sims[j], out=gmax)
        top = np.argpartition(gmax, n_groups - k, axis=1)[:, n_groups - k :]  # (n, k) best groups
        rows = np.arange(n)
        # candidate (r, j, i): member j of the r-th row's i-th best group
        flat = (
            (rows * n_groups)[:, None, None]
            + (np.arange(g) * (n * n_groups))[None, :, None]
            + top[:, None, :]
        )
        cand = np.take(sims.reshape(-1), flat.reshape(n, g * k))
        kth = np.partition(cand, g * k - k, axis=1)[:, g * k - k]
        pos = np.argmax(cand == kth[:, None], axis=1)
        member, rank = np.divmod(pos, k)
        return kth, member * n_groups + top[rows, rank]

    def search(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k-th largest similarity (n,), index of that fit row (n,)) for float32 unit queries."""
        n = q.shape[0]
        sim = np.empty(n, dtype=np.float32)
        idx = np.empty(n, dtype=np.int64)
        threads = _blas_threads()
        # all workers' buffers together stay under 4 * _BLOCK_ELEMS floats (256 MB)
        rows = min(self.block_rows, n, max(16, 4 * _BLOCK_ELEMS // (threads * self.width)))
        starts = list(range(0, n, rows))
        workers = min(threads, len(starts))

        def work(w: int) -> None:
            buf = np.empty(self.g * rows * self.n_groups, dtype=np.float32)
            gmax = np.empty((rows, self.n_groups), dtype=np.float32)
            for s in starts[w::workers]:
                e = min(s + rows, n)
                sim[s:e], idx[s:e] = self._block(q[s:e], buf, gmax)

        if workers <= 1:
            work(0)
            return sim, idx
        # one single-threaded GEMM per worker: selection runs in parallel with the products
        with single_blas_thread(), ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(workers)))
        return sim, idx


def kth_largest_inner_product(queries, fit, k: int) -> np.ndarray:
    """Exact k-th largest inner product of each query row with the fit rows (float32 math)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    f = np.ascontiguousarray(fit, dtype=np.float32)
    if not 1 <= k <= f.shape[0]:
        raise ScoringError(f"k must be between 1 and the {f.shape[0]} fit rows, got {k}")
    return _GroupMaxSearch(f, k).search(q)[0]


def _torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - broken torch install
        return False


def fit_subset(n: int, fraction: float, seed: int) -> np.ndarray | None:
    """The fit rows kept by ``fit_fraction``: sorted ``default_rng(seed).choice(n, m, replace=False)``
    with m = max(1, round(fraction * n)); None when every row is kept."""
    m = max(1, int(round(float(fraction) * n)))
    if m >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def knn_fit_bytes(n: int, d: int, index: str = "exact", input_itemsize: int = 4) -> int:
    """Closed-form peak bytes of a knn fit: the float32 unit rows (4 n d, kept for the distances),
    the engine's copy of them (4 n d; IVF: + 8 n ids), a float32 copy of non-float32 input (4 n d)
    and the search buffers: float32 similarities of a query block against every fit row, at most
    4 workers x 2^24 values (256 MiB), fewer for a small fit set (4 workers x 1024 rows x n)."""
    n, d = int(n), int(d)
    engine = 4 * n * d + (8 * n if index == "ivf" else 0)
    convert = 4 * n * d if input_itemsize != 4 else 0
    work = min(_SEARCH_WORK_BYTES, 4 * 4 * _MAX_BLOCK_ROWS * n)
    return 4 * n * d + engine + convert + work


def exact_top_k(queries: np.ndarray, fit: np.ndarray, k: int, exclude: np.ndarray | None = None,
                l2: bool = False, kth_only: bool = False) -> np.ndarray:
    """Indices (n, k) of each query's k nearest fit rows by inner product (``l2``: by Euclidean
    distance), float32 products in blocks, unordered within a row; ``exclude[i]``: a fit row query i
    may not match; ``kth_only``: the index (n,) of the k-th nearest alone."""
    n_fit = fit.shape[0]
    rows = max(1, (1 << 24) // max(1, n_fit))
    bias = -0.5 * np.einsum("ij,ij->i", fit, fit) if l2 else None  # argmax q.f - |f|^2/2 = argmin |q - f|
    out = np.empty((queries.shape[0],) if kth_only else (queries.shape[0], k), dtype=np.int64)
    for s in range(0, queries.shape[0], rows):
        sims = queries[s : s + rows] @ fit.T
        if bias is not None:
            sims += bias
        if exclude is not None:
            sims[np.arange(sims.shape[0]), exclude[s : s + rows]] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)
        out[s : s + rows] = part[:, k - 1] if kth_only else part[:, :k]
    return out


class _TorchSearch:
    """Exact k-th largest inner product by blocked products and ``topk`` in torch (e.g. on a GPU)."""

    def __init__(self, fit: np.ndarray, k: int, device):
        import torch

        self.torch, self.k, self.device = torch, k, device
        self.fit = torch.from_numpy(fit).to(device)
        self.rows = max(1, (1 << 26) // max(1, fit.shape[0]))  # 256 MB of similarities per block

    def search(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sim = np.empty(q.shape[0], dtype=np.float32)
        idx = np.empty(q.shape[0], dtype=np.int64)
        for s in range(0, q.shape[0], self.rows):
            qt = self.torch.from_numpy(q[s : s + self.rows]).to(self.device)
            val, ind = (qt @ self.fit.T).topk(self.k, dim=1)
            sim[s : s + len(qt)] = val[:, -1].cpu().numpy()
            idx[s : s + len(qt)] = ind[:, -1].cpu().numpy()
        return sim, idx


@register_scorer
class KNN(Scorer):
    """Deep nearest neighbours (Sun, Ming, Zhu & Li, ICML 2022).
    score = -|| z/||z|| - z_(k)/||z_(k)|| ||_2, z_(k) the k-th nearest L2-normalized fit feature (exact search).

    ``backend``: 'auto' (faiss on a GPU when available, else torch on CUDA when present, else the
    numpy group-max engine for fit sets up to ~130k rows, else faiss on the CPU), 'numpy', 'faiss'
    or 'torch'. If some fit rows are all zero (similarity order would differ from distance order) an
    exact faiss ``IndexFlatL2`` is used. ``k`` larger than the number of fit rows is clamped to it
    with a warning (the score becomes the distance to the farthest fit feature).

    Scale (see the module docstring): ``fit_fraction`` in (0, 1] with ``seed`` (:func:`fit_subset`);
    ``index`` 'auto' | 'exact' | 'ivf' with ``nlist`` (default round(sqrt(n)), at most n / 39) and
    ``nprobe`` (default the larger of nlist / 16 and 8 k nlist / n lists). An approximation in use
    (fit_fraction < 1, IVF with its measured ``recall``) is warned about once and shows in ``params``.
    """

    name = "knn"
    grid = {"k": (50, 100, 200, 500, 1000)}
    execution_params = ("backend", "device")
    optional_params = ("fit_fraction", "seed", "index", "nlist", "nprobe")
    resolved_params = {"k": "k_"}
    default = True
    paper = "Sun et al., ICML 2022"
    batch_values = 1 << 24  # the engine blocks internally; large batches amortize the thread pool
    _dtype = np.float32
    _fit_in_blocks = True

    def __init__(self, k: int = 50, backend: str = "auto", device: str = "auto", fit_fraction: float = 1.0,
                 seed: int = 0, index: str = "auto", nlist: int | None = None, nprobe: int | None = None):
        super().__init__()
        if int(k) < 1:
            raise ScoringError(f"knn needs k >= 1, got k={k}")
        if backend not in ("auto", "numpy", "faiss", "torch"):
            raise ScoringError(f"knn backend must be 'auto', 'numpy', 'faiss' or 'torch', got {backend!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise ScoringError(f"knn device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if not 0 < float(fit_fraction) <= 1:
            raise ScoringError(f"knn fit_fraction must be in (0, 1], got {fit_fraction}")
        if index not in ("auto", "exact", "ivf"):
            raise ScoringError(f"knn index must be 'auto', 'exact' or 'ivf', got {index!r}")
        for key, value in (("nlist", nlist), ("nprobe", nprobe)):
            if value is not None and int(value) < 1:
                raise ScoringError(f"knn {key} must be >= 1 (or None for the default), got {value}")
        self.k = int(k)
        self.backend = backend
        self.device = device
        self.fit_fraction = float(fit_fraction)
        self.seed = int(seed)
        self.index = index
        self.nlist = None if nlist is None else int(nlist)
        self.nprobe = None if nprobe is None else int(nprobe)

    def _extra_params(self) -> dict:
        out = {}
        if self.fit_index_ is not None:
            out.update(fit_fraction=self.fit_fraction, seed=self.seed)
        if self.index_ == "ivf":
            out.update(index="ivf", nlist=self.nlist_, nprobe=self.nprobe_, recall=round(self.recall_, 4))
        return out

    def _fit(self, x, y, head, stats) -> None:
        n_all, d = x.shape
        self.fit_index_ = fit_subset(n_all, self.fit_fraction, self.seed)
        n = n_all if self.fit_index_ is None else self.fit_index_.size
        self.k_ = self.k
        if self.k > n:
            warnings.warn(
                f"knn: k={self.k} exceeds the {n} fit samples; using k={n} (distance to the farthest)",
                stacklevel=3,
            )
            self.k_ = n
        gpu = self.device == "cuda" or (self.device == "auto" and faiss_gpu_available())
        if self.device == "cuda" and not faiss_gpu_available() and not _torch_cuda():
            raise ScoringError(
                "knn device='cuda' but neither faiss nor torch sees a GPU here; use device='auto' or 'cpu'"
            )
        gpu_faiss = gpu and faiss_gpu_available()
        torch_gpu = self.device != "cpu" and not gpu_faiss and _torch_cuda()
        exact_gpu = gpu_faiss or (torch_gpu and self.backend in ("auto", "torch"))
        ivf = self.index == "ivf" or (self.index == "auto" and not exact_gpu and n * d > _EXACT_MAX_VALUES)
        self.index_ = "ivf" if ivf else "exact"
        itemsize = np.dtype(getattr(x, "dtype", np.float64)).itemsize
        need = knn_fit_bytes(n, d, self.index_, itemsize)
        self.memory_estimate_ = need
        check_memory(need, f"knn over {n} fit rows of width {d} ({self.index_} search)",
                     f"keep a seeded subset (knn.fit_fraction=0.01, as Sun et al. on ImageNet) or use a "
                     f"narrower layer (the index alone is {format_bytes(4 * n * d)})", ScoringError)
        rows = x if self.fit_index_ is None else x[self.fit_index_]
        fit, norms = _normalize(np.ascontiguousarray(as_numpy(rows), dtype=np.float32))
        del rows
        unit = bool(np.all(norms > 0))
        self.fit_ = fit
        self._unit = unit
        self.recall_ = None
        if ivf:
            self._fit_ivf(fit, unit, gpu_faiss)
        else:
            self._fit_exact(fit, unit, gpu_faiss, torch_gpu)
        if self.fit_index_ is not None:
            warnings.warn(f"knn: exact k-NN over a seeded {self.fit_fraction:g} of the fit set ({n} of {n_all} "
                          f"rows, seed {self.seed})" if not ivf else
                          f"knn: fitted on a seeded {self.fit_fraction:g} of the fit set ({n} of {n_all} rows, "
                          f"seed {self.seed})", stacklevel=3)
        if ivf:
            warnings.warn(f"knn: approximate search, faiss IVF index (nlist={self.nlist_}, nprobe={self.nprobe_}) "
                          f"over {n} rows; measured recall@{self.k_} = {self.recall_:.4f} against exact search "
                          f"on {self.recall_queries_.size} fit rows", stacklevel=3)

    def _fit_exact(self, fit, unit, gpu_faiss, torch_gpu) -> None:
        n, d = fit.shape
        use_numpy = unit and (
            self.backend == "numpy"
            or (self.backend == "auto" and not gpu_faiss and not torch_gpu and _GroupMaxSearch.suitable(n))
        )
        if use_numpy:
            self.backend_ = "numpy"
            self._engine = _GroupMaxSearch(fit, self.k_)
            self.fit_ = self._engine.slabs.reshape(-1, d)[:n]  # the engine's copy: one copy in memory
            return
        if unit and (self.backend == "torch" or (self.backend == "auto" and torch_gpu)):
            import torch

            dev = torch.device("cuda" if self.device != "cpu" and _torch_cuda() else "cpu")
            self._engine = _TorchSearch(fit, self.k_, dev)
            self.backend_ = f"torch-{dev.type}"
            return
        faiss = _faiss()
        self.backend_ = "faiss"
        index = faiss.IndexFlatIP(d) if unit else faiss.IndexFlatL2(d)
        index.add(fit)
        if gpu_faiss and self.k_ <= 2048:  # faiss GPU k-selection limit
            index, self.backend_ = _to_gpus(faiss, index, self)
        self._engine = index

    def _fit_ivf(self, fit, unit, gpu_faiss) -> None:
        faiss = _faiss()
        n, d = fit.shape
        self.nlist_ = min(n, self.nlist or max(1, min(int(round(math.sqrt(n))), n // 39)))
        self.nprobe_ = min(self.nlist_, self.nprobe or max(1, math.ceil(self.nlist_ / 16),
                                                           math.ceil(8 * self.k_ * self.nlist_ / n)))
        metric = faiss.METRIC_INNER_PRODUCT if unit else faiss.METRIC_L2
        self._quantizer = faiss.IndexFlatIP(d) if unit else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(self._quantizer, d, self.nlist_, metric)
        index.cp.seed = self.seed
        index.cp.max_points_per_centroid = 64
        index.cp.niter = 20
        index.train(fit)
        index.add(fit)
        index.nprobe = self.nprobe_
        self.backend_ = "faiss-ivf"
        if gpu_faiss and self.k_ <= 2048:
            index, self.backend_ = _to_gpus(faiss, index, self, ivf=True)
        self._engine = index
        # recall of the IVF neighbours against exact search, leave-one-out on seeded fit rows
        kk = min(self.k_, n - 1)
        r = min(_RECALL_QUERIES, n)
        self.recall_queries_ = np.sort(np.random.default_rng(self.seed).choice(n, r, replace=False))
        if kk < 1:
            self.recall_ = 1.0
            return
        q = self.fit_[self.recall_queries_]
        exact = exact_top_k(q, self.fit_, kk, exclude=self.recall_queries_, l2=not unit)
        found = self._ivf_search(q, kk + 1)
        hits = 0
        for i in range(r):
            got = found[i][found[i] != self.recall_queries_[i]][:kk]
            hits += np.intersect1d(got[got >= 0], exact[i]).size
        self.recall_ = hits / (r * kk)

    def _ivf_search(self, q: np.ndarray, k: int) -> np.ndarray:
        _, idx = self._engine.search(q, k)
        return idx

    def _score_batch(self, x):
        q, _ = _normalize(np.ascontiguousarray(x, dtype=np.float32))
        if self.backend_ in ("numpy",) or self.backend_.startswith("torch"):
            _, kth = self._engine.search(q)
        else:
            _, idx = self._engine.search(q, self.k_)
            kth = idx[:, self.k_ - 1]
            missing = np.flatnonzero(kth < 0)  # IVF: fewer than k rows in the probed lists
            if missing.size:  # exact search for those rows
                kth = kth.copy()
                kth[missing] = exact_top_k(q[missing], self.fit_, self.k_, l2=not self._unit, kth_only=True)
        # distance to the k-th neighbour from the vectors themselves (not 2 - 2 sim, which loses
        # digits for close neighbours); differences in float32, sum of squares in float64
        diff = q - self.fit_[kth]
        return -np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
