"""Scores from where the penultimate feature lies relative to the linear head (W, b).

* fDBD: mean distance to the decision boundaries of the predicted class, per unit of distance to
  the fit mean;
* NCI: alignment of the centred feature with the predicted class's weight vector (neural collapse
  says ID features line up with it), plus a small L1-norm term;
* GradNorm: the L1 norm of the last-layer weight gradient of KL(uniform || softmax), in closed form.

All need the head, so the pipeline runs them at the ``penultimate`` layer only.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..errors import ScoringError
from .base import Scorer
from .registry import register_scorer

__all__ = ["FDBD", "NCI", "GradNorm", "pairwise_row_distances"]


def pairwise_row_distances(w: np.ndarray) -> np.ndarray:
    """||w_i - w_j||_2 for all row pairs (C, C), from the Gram matrix (float64; diagonal exactly 0)."""
    g = w @ w.T
    sq = np.diag(g)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


@register_scorer
class FDBD(Scorer):
    """fDBD: fast decision-boundary distance (Liu & Qin, ICML 2024).
    score = 1/(C-1) sum_{c != y^} |l_y^ - l_c| / ||w_y^ - w_c|| / ||z - mu||, l = W z + b, y^ = argmax l, mu = mean fit feature.

    ``center=False`` divides by ||z|| instead of ||z - mu|| (OpenOOD v1.5 picks between the two on
    validation data: ``distance_as_normalizer``, the ``grid``). The paper's code sums over c without
    the 1 / (C - 1) (a constant factor; pytorch-ood averages as here). Classes whose weight rows
    equal w_y^ have no boundary with it and add 0; a feature at mu is divided by 1e-12 times the
    mean fit distance instead of 0.
    """

    name = "fdbd"
    paper = "Liu & Qin, ICML 2024"
    needs_head = True
    grid = {"center": (True, False)}

    def __init__(self, center: bool = True):
        super().__init__()
        self.center = bool(center)

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        if w.shape[0] < 2:
            raise ScoringError("fdbd needs a head with at least 2 classes (decision boundaries)")
        self.w_, self.b_ = w, b
        self.mean_ = x.mean(axis=0) if self.center else np.zeros(x.shape[1])
        dist = pairwise_row_distances(w)
        self.inv_dist_ = np.divide(1.0, dist, out=np.zeros_like(dist), where=dist > 0)
        typical = float(np.linalg.norm(x - self.mean_, axis=1).mean())
        self.floor_ = 1e-12 * typical if typical > 0 else np.finfo(np.float64).tiny

    def _score_batch(self, x):
        logits = x @ self.w_.T + self.b_
        top = np.argmax(logits, axis=1)
        gap = logits[np.arange(len(x)), top][:, None] - logits  # >= 0, 0 at the top class
        boundary = np.einsum("ij,ij->i", gap, self.inv_dist_[top]) / (logits.shape[1] - 1)
        norm = np.maximum(np.linalg.norm(x - self.mean_, axis=1), self.floor_)
        return boundary / norm


@register_scorer
class NCI(Scorer):
    """NCI: neural-collapse-inspired score (Liu & Qin, CVPR 2025).
    score = w_y^ . (z - mu) / ||z - mu|| + alpha ||z||_1, y^ = argmax(W z + b), mu = mean fit feature, alpha = 1e-4.

    w_y^ is the raw weight row (not normalized), as in the authors' code in OpenOOD v1.5, whose
    default alpha and sweep (the ``grid``) are used here; pytorch-ood defaults to alpha = 0. A
    feature equal to mu has an alignment term of 0.
    """

    name = "nci"
    paper = "Liu & Qin, CVPR 2025"
    needs_head = True
    grid = {"alpha": (1e-4, 1e-3, 1e-2, 1e-1)}

    def __init__(self, alpha: float = 1e-4):
        super().__init__()
        if not float(alpha) >= 0:
            raise ScoringError(f"nci alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    def _fit(self, x, y, head, stats) -> None:
        self.w_, self.b_ = head
        self.mean_ = x.mean(axis=0)

    def _score_batch(self, x):
        top = np.argmax(x @ self.w_.T + self.b_, axis=1)
        zc = x - self.mean_
        norm = np.linalg.norm(zc, axis=1)
        align = np.einsum("ij,ij->i", zc, self.w_[top])
        align = np.divide(align, norm, out=np.zeros_like(norm), where=norm > 0)
        return align + self.alpha * np.abs(x).sum(axis=1)


@register_scorer
class GradNorm(Scorer):
    """GradNorm: last-layer gradient norm (Huang, Geng & Li, NeurIPS 2021).
    score = ||dKL(u || softmax(l / T)) / dW||_1 = ||softmax(l / T) - u||_1 ||z||_1 / T, l = W z + b, u = 1/C, T = 1.

    Closed form: KL(u || p) = -(1/C) sum_c log p_c - log C with p = softmax(l / T), so
    dKL/dl_j = (p_j - 1/C) / T; with l = W z + b, dKL/dW = g z^T (g that vector), an outer product,
    whose entry-wise L1 norm is ||g||_1 ||z||_1. No backward pass is needed. The paper's code (and
    OpenOOD) back-propagate the cross-entropy to an all-ones target, C times this KL: a constant
    factor (pytorch-ood uses the mean, as here). Only the weight gradient counts, as in the paper.
    """

    name = "gradnorm"
    paper = "Huang, Geng & Li, NeurIPS 2021"
    needs_head = True
    grid = {}

    def __init__(self, T: float = 1.0):
        super().__init__()
        if not float(T) > 0:
            raise ScoringError(f"gradnorm temperature T must be > 0, got {T}")
        self.T = float(T)

    def _fit(self, x, y, head, stats) -> None:
        self.w_, self.b_ = head

    def _score_batch(self, x):
        s = (x @ self.w_.T + self.b_) / self.T
        p = np.exp(s - logsumexp(s, axis=1, keepdims=True))
        g = np.abs(p - 1.0 / p.shape[1]).sum(axis=1) / self.T
        return g * np.abs(x).sum(axis=1)
