"""Scores from how a penultimate feature projects onto the span of the fit features.

* Residual: the norm of the part of z - u outside the principal subspace of the fit features, u the
  head's origin (ViM's residual without its logit term);
* pNML: the predictive-normalized-maximum-likelihood regret of the head on L2-normalized features,
  large for directions the fit features barely cover.

Both read the head (W, b), so the pipeline runs them at ``penultimate`` only. Eigen-decompositions
are float64 and single-threaded in BLAS (see :mod:`ncprobe.stats._threads`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit, logsumexp

from ..errors import ScoringError
from ..stats._threads import single_blas_thread
from .base import Scorer
from .registry import register_scorer
from .subspace import residual_space

__all__ = ["Residual", "PNML"]


def _eigh(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric part of m."""
    with single_blas_thread():
        return np.linalg.eigh(0.5 * (m + m.T))


@register_scorer
class Residual(Scorer):
    """Residual: distance to the principal subspace (Wang, Li, Feng & Zhang, CVPR 2022, ViM's baseline).
    score = -||P_perp (z - u)||, u = -pinv(W) b, P_perp = projection on the eigenvectors of the d - D smallest eigenvalues of (x - u)^T (x - u) / N.

    The fit features give the subspace (OpenOOD v1.5 uses ID validation features). ``dim`` (D)
    defaults to ViM's rule (:func:`~ncprobe.scores.subspace.vim_default_dim`: 1000 for d >= 2048,
    512 for d >= 768, else d // 2); OpenOOD's config uses D = 512 and sweeps nothing.
    """

    name = "residual"
    paper = "Wang et al., CVPR 2022"
    needs_head = True
    grid = {}

    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is not None and int(dim) < 1:
            raise ScoringError(f"residual dim must be >= 1, got {dim}")
        self.dim = None if dim is None else int(dim)

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        self.dim_principal_, self.origin_, self.null_space_ = residual_space(x, w, b, self.dim, "residual")

    def _score_batch(self, x):
        return -np.linalg.norm((x - self.origin_) @ self.null_space_, axis=1)


@register_scorer
class PNML(Scorer):
    """pNML regret of the last layer (Bibas, Feder & Hassner, NeurIPS 2021).
    score = -log(sum_c p_c / (p_c + (1 - p_c) p_c^g)) / log C, p = softmax(W u + b), u = z / ||z||, g = q / (1 + q), q = u^T (X^T X)^+ u, X = the L2-normalized fit features.

    As in the authors' code (and pytorch-ood), the head is applied to the normalized feature. The
    pseudo-inverse drops eigenvalues below d * eps * lambda_max (the authors invert X^T X when it
    is well conditioned, else take torch's pinv). Each term is evaluated as
    expit(-(log(1 - p_c) + (g - 1) log p_c)) from the log-softmax, so no probability is clamped
    (pytorch-ood clamps p to [1e-12, 1 - 1e-12] in float32). A zero feature row has q = 0 and
    regret 0.
    """

    name = "pnml"
    paper = "Bibas, Feder & Hassner, NeurIPS 2021"
    needs_head = True
    grid = {}

    def __init__(self):
        super().__init__()

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        return x / np.where(norms > 0, norms, 1.0)[:, None]

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        if w.shape[0] < 2:
            raise ScoringError("pnml needs a head with at least 2 classes")
        self.w_, self.b_ = w, b
        u = self._unit(x)
        lam, v = _eigh(u.T @ u)
        if not lam[-1] > 0:
            raise ScoringError(
                "pnml: the fit features are all zero; check the features of this layer"
            )
        keep = lam > lam[-1] * x.shape[1] * np.finfo(np.float64).eps
        self.whiten_ = np.ascontiguousarray(v[:, keep] / np.sqrt(lam[keep]))  # Wh Wh^T = (X^T X)^+
        self.log_classes_ = math.log(w.shape[0])

    def _score_batch(self, x):
        u = self._unit(x)
        a = u @ self.whiten_
        q = np.einsum("ij,ij->i", a, a)
        g = q / (1.0 + q)
        s = u @ self.w_.T + self.b_
        lp = s - logsumexp(s, axis=1, keepdims=True)
        log_rest = np.log1p(-np.exp(lp))  # log(1 - p_c); -inf where p_c rounds to 1 (term -> 1)
        terms = expit(-(log_rest + (g - 1.0)[:, None] * lp))
        return -np.log(terms.sum(axis=1)) / self.log_classes_
