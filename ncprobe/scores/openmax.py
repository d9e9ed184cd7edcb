"""OpenMax: extreme-value recalibration of the logits with an explicit "unknown" class.

Per class c, OpenMax keeps the mean activation vector (MAV, the mean logit vector of the fit rows
of class c that the model classifies correctly) and a Weibull model of the largest distances of
those rows to it. A test row's top ``alpha`` logits are damped by their rank weight times the
Weibull CDF of its distance to the class MAV; the removed mass becomes the logit of an unknown
class. The score is ``-log P(unknown)`` under the softmax of the revised logits: monotone in the
unknown probability the paper thresholds (so the same AUROC), computed as
``log(1 + sum_c exp(v^_c - v_0))`` so that it does not saturate where P(unknown) is near 0 (it ties
only where P(unknown) is within e^-745 of 1).

OpenMax assumes that the top activations are positive (the unknown logit is a damped sum of them),
and its revision depends on a constant shift of the logits, unlike softmax scores. With few
classes and alpha close to C, the damped mass of the non-top classes alone can dominate every
row; reduce ``alpha`` there.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

from ..errors import ScoringError
from .base import Scorer
from .registry import register_scorer

__all__ = ["OpenMax", "WeibullTail", "fit_weibull"]

#: libMR's translation of the tail before the Weibull fit (kept, as pytorch-ood does)
LIBMR_SHIFT = 10000.0


def _shape_equation(k: float, logs: np.ndarray) -> float:
    """Profile-likelihood equation of the Weibull shape k (loc 0): increasing in k, root = MLE."""
    top = logs.max()
    wts = np.exp(k * (logs - top))
    return float(np.dot(wts, logs) / wts.sum() - 1.0 / k - logs.mean())


def fit_weibull(data) -> tuple[float, float]:
    """Maximum-likelihood (shape k, scale lam) of a two-parameter Weibull (loc 0) to positive data.

    The shape solves sum y^k log y / sum y^k - 1/k = mean log y (computed with y^k relative to the
    largest y, so shapes of 10^4 and more do not overflow); lam = (mean y^k)^(1/k). Needs at least
    two distinct values.
    """
    y = np.asarray(data, np.float64)
    if y.size < 2 or not np.all(y > 0) or np.ptp(y) <= 0:
        raise ScoringError("a Weibull fit needs at least two distinct positive values")
    logs = np.log(y)
    lo, hi = 1e-3, 1.0
    while _shape_equation(hi, logs) <= 0:
        lo, hi = hi, hi * 2.0
        if hi > 1e15:  # pragma: no cover - needs a relative spread below ~1e-15
            raise ScoringError("the Weibull tail is too narrow to fit; use a larger tailsize")
    while _shape_equation(lo, logs) >= 0:  # pragma: no cover - h(0+) = -inf
        lo /= 2.0
    k = brentq(_shape_equation, lo, hi, args=(logs,), xtol=1e-14, rtol=4 * np.finfo(float).eps)
    top = logs.max()
    log_lam = top + np.log(np.mean(np.exp(k * (logs - top)))) / k
    return float(k), float(np.exp(log_lam))


class WeibullTail:
    """libMR-style ``FitHigh`` model of one class's largest distances: the tail is shifted by
    LIBMR_SHIFT - min(tail), fitted by :func:`fit_weibull`, and ``cdf(d)`` is the Weibull CDF at
    the same shift. A tail without two distinct values becomes a step at its largest value."""

    def __init__(self, tail: np.ndarray):
        tail = np.asarray(tail, np.float64)
        self.shift = LIBMR_SHIFT - float(tail.min())
        self.tail_max = float(tail.max())
        self.step = bool(np.ptp(tail) <= 0)
        self.shape = self.scale = None
        if not self.step:
            self.shape, self.scale = fit_weibull(tail + self.shift)

    def cdf(self, dist: np.ndarray) -> np.ndarray:
        dist = np.asarray(dist, np.float64)
        if self.step:
            return (dist > self.tail_max).astype(np.float64)
        y = dist + self.shift
        with np.errstate(divide="ignore", over="ignore"):
            z = np.exp(self.shape * (np.log(np.maximum(y, 0.0)) - np.log(self.scale)))
        return np.where(y > 0, -np.expm1(-z), 0.0)


@register_scorer
class OpenMax(Scorer):
    """OpenMax (Bendale & Boult, CVPR 2016).
    score = -log softmax([v_0, v^])_0, v^_c = l_c (1 - w_c F_c(d_c)), v_0 = sum_c l_c w_c F_c(d_c), w = (alpha + 1 - rank) / alpha on the top-alpha classes, F_c the Weibull CDF of class c's tail of distances to its MAV.

    Defaults follow the paper: ``tailsize`` 20, ``alpha`` 10 (clamped to C) and the "eucos" distance
    d = ||l - mu_c|| / 200 + (1 - cos(l, mu_c)) (``euclid_weight`` 1/200, ``cosine_weight`` 1);
    MAVs and tails use the *correctly classified* fit rows of each class, as the paper and OpenOOD
    do. Differences to the peers: pytorch-ood takes every fit row of a class and by default the
    Euclidean distance only (``euclid_weight=1, cosine_weight=0`` here), tailsize 25; OpenOOD v1.5
    uses alpha 3 and the Euclidean distance. The Weibull shape and scale are the exact maximum-
    likelihood values (libMR, and pytorch-ood's scipy ``exponweib.fit``, optimize numerically). The
    score is -log P(unknown) rather than P(unknown), which saturates; a class with no correctly
    classified fit row has no model and counts as fully unknown (F = 1).
    """

    name = "openmax"
    input = "logits"
    needs_labels = True
    paper = "Bendale & Boult, CVPR 2016"
    grid = {}

    def __init__(
        self,
        tailsize: int = 20,
        alpha: int = 10,
        euclid_weight: float = 1 / 200,
        cosine_weight: float = 1.0,
    ):
        super().__init__()
        if int(tailsize) < 2 or int(alpha) < 1:
            raise ScoringError(
                f"openmax needs tailsize >= 2 and alpha >= 1, got {tailsize}, {alpha}"
            )
        if not (float(euclid_weight) >= 0 and float(cosine_weight) >= 0) or not (
            float(euclid_weight) + float(cosine_weight) > 0
        ):
            raise ScoringError("openmax distance weights must be >= 0 and not both 0")
        self.tailsize = int(tailsize)
        self.alpha = int(alpha)
        self.euclid_weight = float(euclid_weight)
        self.cosine_weight = float(cosine_weight)

    def _distances(self, v: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Weighted Euclidean + cosine distances of rows v (..., C) to centers of the same shape."""
        out = np.zeros(v.shape[:-1])
        if self.euclid_weight:
            out += self.euclid_weight * np.linalg.norm(v - centers, axis=-1)
        if self.cosine_weight:
            nv = np.linalg.norm(v, axis=-1)
            nc = np.linalg.norm(centers, axis=-1)
            den = nv * nc
            cos = np.divide(
                np.sum(v * centers, axis=-1), den, out=np.zeros_like(den), where=den > 0
            )
            out += self.cosine_weight * (1.0 - cos)
        return out

    def _fit(self, x, y, head, stats) -> None:
        n_cls = x.shape[1]
        if y.max() >= n_cls:
            raise ScoringError(
                f"openmax: label {int(y.max())} but the logits have {n_cls} classes; pass the fit labels"
            )
        correct = np.argmax(x, axis=1) == y
        self.centers_ = np.zeros((n_cls, n_cls))
        self.has_model_ = np.zeros(n_cls, dtype=bool)
        self.models_: list[WeibullTail | None] = [None] * n_cls
        for c in np.unique(y[correct]):
            rows = x[correct & (y == c)]
            center = rows.mean(axis=0)
            dist = self._distances(rows, np.broadcast_to(center, rows.shape))
            tail = np.sort(dist)[-self.tailsize :]
            self.centers_[c] = center
            self.models_[c] = WeibullTail(tail)
            self.has_model_[c] = True
        self.alpha_ = min(self.alpha, n_cls)
        self.rank_weights_ = (self.alpha_ + 1 - np.arange(1, self.alpha_ + 1)) / self.alpha_

    def _score_batch(self, x):
        n, n_cls = x.shape
        a = self.alpha_
        top = np.argsort(-x, axis=1, kind="stable")[:, :a]  # (n, alpha), best first
        rows = np.arange(n)[:, None]
        dist = self._distances(np.broadcast_to(x[:, None, :], (n, a, n_cls)), self.centers_[top])
        cdf = np.ones((n, a))
        for c in np.unique(top):
            sel = top == c
            if self.has_model_[c]:
                cdf[sel] = self.models_[c].cdf(dist[sel])
        damp = self.rank_weights_[None, :] * cdf  # (n, alpha)
        picked = x[rows, top]
        revised = x.copy()
        revised[rows, top] = picked * (1.0 - damp)
        unknown = np.sum(picked * damp, axis=1)
        # -log P(unknown) = log(1 + sum_c exp(v^_c - v_0)), without cancelling v_0
        return np.logaddexp(0.0, logsumexp(revised - unknown[:, None], axis=1))
