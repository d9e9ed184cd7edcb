"""Deep nearest-neighbour score (kNN) with exact faiss search."""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ScoringError
from .base import Scorer
from .registry import register_scorer

__all__ = ["KNN", "faiss_gpu_available"]


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
    faiss = _faiss()
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken GPU runtime
        return False


def _normalize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows over their L2 norm (zero rows stay zero), and the norms (float64)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    out = x / np.maximum(norms, 1e-12).astype(x.dtype)[:, None]
    return out, norms


@register_scorer
class KNN(Scorer):
    """Deep nearest neighbours (Sun, Ming, Zhu & Li, ICML 2022).
    score = -|| z/||z|| - z_(k)/||z_(k)|| ||_2, z_(k) the k-th nearest L2-normalized fit feature (exact search).

    Search: faiss ``IndexFlatIP`` on the normalized float32 fit features (exact, BLAS for large
    batches; on a GPU index when faiss has GPU support and a GPU is present, ``device='auto'``). The
    k-th neighbour found by similarity is the k-th by distance because all fit rows have unit norm
    (if some fit rows are all-zero, an exact ``IndexFlatL2`` is used instead); its distance is then
    recomputed in float64 from the vectors. ``k`` larger than the number of fit rows is clamped to
    that number with a warning (the score becomes the distance to the farthest fit feature).
    """

    name = "knn"
    batch_size = 16384
    _dtype = np.float32

    def __init__(self, k: int = 50, device: str = "auto"):
        super().__init__()
        if int(k) < 1:
            raise ScoringError(f"knn needs k >= 1, got k={k}")
        if device not in ("auto", "cpu", "cuda"):
            raise ScoringError(f"knn device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self.k = int(k)
        self.device = device

    def _fit(self, x, y, head, stats) -> None:
        faiss = _faiss()
        n, d = x.shape
        self.k_ = self.k
        if self.k > n:
            warnings.warn(
                f"knn: k={self.k} exceeds the {n} fit samples; using k={n} (distance to the farthest)",
                stacklevel=3,
            )
            self.k_ = n
        fit, norms = _normalize(np.ascontiguousarray(x, dtype=np.float32))
        self._unit = bool(np.all(norms > 0))
        index = faiss.IndexFlatIP(d) if self._unit else faiss.IndexFlatL2(d)
        index.add(fit)
        use_gpu = self.device == "cuda" or (self.device == "auto" and faiss_gpu_available())
        if use_gpu:
            if not faiss_gpu_available():
                raise ScoringError(
                    "knn device='cuda' but faiss has no GPU support here; use device='auto' or 'cpu'"
                )
            if self.k_ <= 2048:  # faiss GPU k-selection limit
                self._gpu_res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        self.index_ = index
        self.fit_ = fit

    def _score_batch(self, x):
        q, _ = _normalize(np.ascontiguousarray(x, dtype=np.float32))
        _, idx = self.index_.search(q, self.k_)
        kth = idx[:, self.k_ - 1]
        if np.any(kth < 0):  # pragma: no cover - cannot happen with k <= n on a flat index
            raise ScoringError("knn search returned fewer than k neighbours; lower k")
        # exact float64 distance to the k-th neighbour
        qn = x.astype(np.float64)
        qn /= np.maximum(np.linalg.norm(qn, axis=1), 1e-12)[:, None]
        diff = qn - self.fit_[kth].astype(np.float64)
        return -np.sqrt(np.einsum("ij,ij->i", diff, diff))
