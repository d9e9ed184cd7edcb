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

The k-th neighbour's distance is then recomputed from the two unit vectors (float64 sum).
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ScoringError
from ..stats._threads import blas_controller, single_blas_thread
from .base import Scorer
from .registry import register_scorer

__all__ = ["KNN", "faiss_gpu_available", "kth_largest_inner_product"]

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


@register_scorer
class KNN(Scorer):
    """Deep nearest neighbours (Sun, Ming, Zhu & Li, ICML 2022).
    score = -|| z/||z|| - z_(k)/||z_(k)|| ||_2, z_(k) the k-th nearest L2-normalized fit feature (exact search).

    ``backend``: 'auto' (faiss on a GPU when available, else the numpy group-max engine for fit
    sets up to ~130k rows, else faiss on the CPU), 'numpy' or 'faiss'. If some fit rows are all
    zero (similarity order would differ from distance order) an exact faiss ``IndexFlatL2`` is used.
    ``k`` larger than the number of fit rows is clamped to it with a warning (the score becomes the
    distance to the farthest fit feature).
    """

    name = "knn"
    grid = {"k": (50, 100, 200, 500, 1000)}
    execution_params = ("backend", "device")
    resolved_params = {"k": "k_"}
    default = True
    paper = "Sun et al., ICML 2022"
    batch_values = 1 << 24  # the engine blocks internally; large batches amortize the thread pool
    _dtype = np.float32

    def __init__(self, k: int = 50, backend: str = "auto", device: str = "auto"):
        super().__init__()
        if int(k) < 1:
            raise ScoringError(f"knn needs k >= 1, got k={k}")
        if backend not in ("auto", "numpy", "faiss"):
            raise ScoringError(f"knn backend must be 'auto', 'numpy' or 'faiss', got {backend!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise ScoringError(f"knn device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self.k = int(k)
        self.backend = backend
        self.device = device

    def _fit(self, x, y, head, stats) -> None:
        n, d = x.shape
        self.k_ = self.k
        if self.k > n:
            warnings.warn(
                f"knn: k={self.k} exceeds the {n} fit samples; using k={n} (distance to the farthest)",
                stacklevel=3,
            )
            self.k_ = n
        fit, norms = _normalize(np.ascontiguousarray(x, dtype=np.float32))
        self.fit_ = fit
        unit = bool(np.all(norms > 0))
        gpu = self.device == "cuda" or (self.device == "auto" and faiss_gpu_available())
        if self.device == "cuda" and not faiss_gpu_available():
            raise ScoringError(
                "knn device='cuda' but faiss has no GPU support here; use device='auto' or 'cpu'"
            )
        use_numpy = unit and (
            self.backend == "numpy"
            or (self.backend == "auto" and not gpu and _GroupMaxSearch.suitable(n))
        )
        self.backend_ = "numpy" if use_numpy else "faiss"
        if use_numpy:
            self._engine = _GroupMaxSearch(fit, self.k_)
            return
        faiss = _faiss()
        index = faiss.IndexFlatIP(d) if unit else faiss.IndexFlatL2(d)
        index.add(fit)
        if gpu and self.k_ <= 2048:  # faiss GPU k-selection limit
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
            self.backend_ = "faiss-gpu"
        self._engine = index

    def _score_batch(self, x):
        q, _ = _normalize(np.ascontiguousarray(x, dtype=np.float32))
        if self.backend_ == "numpy":
            _, kth = self._engine.search(q)
        else:
            _, idx = self._engine.search(q, self.k_)
            kth = idx[:, self.k_ - 1]
        # distance to the k-th neighbour from the vectors themselves (not 2 - 2 sim, which loses
        # digits for close neighbours); differences in float32, sum of squares in float64
        diff = q - self.fit_[kth]
        return -np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
