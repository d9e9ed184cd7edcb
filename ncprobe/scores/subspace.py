"""Principal-subspace scores that also read the classifier head: ViM and NECO."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..errors import ScoringError
from ..stats._threads import single_blas_thread
from .base import Scorer
from .registry import register_scorer

__all__ = ["ViM", "NECO", "vim_default_dim"]


def vim_default_dim(d: int) -> int:
    """ViM's principal dimension rule (Wang et al. 2022 code): 1000 if d >= 2048, 512 if d >= 768, else d // 2."""
    if d >= 2048:
        return 1000
    if d >= 768:
        return 512
    return d // 2


def _eigh_desc(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with single_blas_thread():
        lam, v = np.linalg.eigh(0.5 * (cov + cov.T))
    return lam[::-1], v[:, ::-1]


def residual_space(x: np.ndarray, w: np.ndarray, b: np.ndarray, dim: int | None, who: str):
    """(D, u, P_perp) of ViM's residual: u = -pinv(W) b, and the (d, d - D) eigenvectors of the
    d - D smallest eigenvalues of the uncentred covariance of (x - u) / N; D from ``dim`` or
    :func:`vim_default_dim`. Shared by ViM and the Residual score."""
    d = x.shape[1]
    dim = vim_default_dim(d) if dim is None else dim
    if not 1 <= dim < d:
        raise ScoringError(
            f"{who} principal dimension {dim} must be between 1 and the feature width {d} - 1; pass a smaller dim"
        )
    with single_blas_thread():
        origin = -np.linalg.pinv(w) @ b
    xc = x - origin
    _, v = _eigh_desc(xc.T @ xc / x.shape[0])
    return dim, origin, np.ascontiguousarray(v[:, dim:])


@register_scorer
class ViM(Scorer):
    """Virtual-logit matching (Wang, Li, Zhang & Zhang, CVPR 2022).
    score = logsumexp_c l_c - alpha ||P_perp (z - u)||, u = -pinv(W) b, alpha = mean max-logit / mean residual norm on the fit set.

    ``dim`` (the principal dimension D) defaults to :func:`vim_default_dim`; P_perp projects on the
    eigenvectors of the d - D smallest eigenvalues of the uncentred covariance of (z - u) / N.
    The fit features give the subspace and alpha (the paper uses the training set).
    """

    name = "vim"
    grid = {"dim": (64, 128, 256, 512, 1000)}
    resolved_params = {"dim": "dim_principal_"}
    default = True
    paper = "Wang et al., CVPR 2022"
    needs_head = True

    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is not None and int(dim) < 1:
            raise ScoringError(f"vim dim must be >= 1, got {dim}")
        self.dim = None if dim is None else int(dim)

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        self.w_, self.b_ = w, b
        self.dim_principal_, self.origin_, self.null_space_ = residual_space(x, w, b, self.dim, "vim")
        xc = x - self.origin_
        vlogit = np.linalg.norm(xc @ self.null_space_, axis=1)
        mean_v = float(vlogit.mean())
        if not mean_v > 0:
            raise ScoringError(
                "vim: the fit features have no residual outside the principal subspace; use a smaller dim"
            )
        self.alpha_ = float((x @ w.T + b).max(axis=1).mean() / mean_v)

    def _score_batch(self, x):
        energy = logsumexp(x @ self.w_.T + self.b_, axis=1)
        vlogit = np.linalg.norm((x - self.origin_) @ self.null_space_, axis=1)
        return energy - self.alpha_ * vlogit


@register_scorer
class NECO(Scorer):
    """Neural-collapse-based OOD score (Ammar, Belkhir, Popescu, Manzanera & Franchi, ICLR 2024).
    score = ||P s(z)|| / ||s(z)||, s = standardization fitted on the fit set, P = projection on its top-``dim`` PCA axes.

    ``dim`` defaults to C - 1 (the dimension spanned by a simplex ETF of C classes). ``maxlogit``:
    multiply by the max logit. The authors' code multiplies for ViT/DeiT/Swin and *not* for ResNets,
    so the default is False. A row equal to the fit mean (s(z) = 0) scores 1.
    """

    name = "neco"
    grid = {"dim": (10, 50, 100, 200)}
    resolved_params = {"dim": "dim_principal_"}
    default = True
    paper = "Ammar et al., ICLR 2024"
    needs_head = True

    def __init__(self, dim: int | None = None, maxlogit: bool = False):
        super().__init__()
        if dim is not None and int(dim) < 1:
            raise ScoringError(f"neco dim must be >= 1, got {dim}")
        self.dim = None if dim is None else int(dim)
        self.maxlogit = bool(maxlogit)

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        d = x.shape[1]
        dim = max(1, w.shape[0] - 1) if self.dim is None else self.dim
        if dim > d:
            raise ScoringError(f"neco dim {dim} exceeds the feature width {d}; pass dim <= {d}")
        self.dim_principal_ = dim
        self.w_, self.b_ = w, b
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(
            scale > 0, scale, 1.0
        )  # constant features: as sklearn's StandardScaler
        s = (x - self.mean_) / self.scale_
        _, v = _eigh_desc(s.T @ s / x.shape[0])
        self.components_ = np.ascontiguousarray(v[:, :dim])  # (d, dim)

    def _score_batch(self, x):
        s = (x - self.mean_) / self.scale_
        full = np.linalg.norm(s, axis=1)
        reduced = np.linalg.norm(s @ self.components_, axis=1)
        ratio = np.divide(reduced, full, out=np.ones_like(full), where=full > 0)
        if self.maxlogit:
            ratio = ratio * (x @ self.w_.T + self.b_).max(axis=1)
        return ratio
