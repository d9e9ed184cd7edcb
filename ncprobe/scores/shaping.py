"""Activation and weight shaping at the classifier input, scored by the energy of the re-applied head.

Each scorer changes the penultimate feature z (ReAct, VRA, ASH-P/B/S, SCALE) or the head's weights
(DICE), applies the head (W, b) again and returns ``logsumexp`` of the new logits (the negative free
energy at T = 1, as every paper here does). They need the head, so the pipeline runs them at the
``penultimate`` layer only.

The features are the *pooled* penultimate vectors ncprobe caches. ASH prunes, in its paper's ResNet
code, the (C, H, W) map before average pooling; ncprobe follows OpenOOD v1.5 (and the ASH README's
usage example), which shape the pooled (C,) vector. ReAct, VRA, SCALE and DICE act on the pooled
features in their papers as well. Percentiles are in percent (0-100), as in the papers and OpenOOD;
pytorch-ood gives them as fractions.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..errors import ScoringError
from .base import Scorer
from .registry import register_scorer

__all__ = ["ReAct", "VRA", "ASHP", "ASHB", "ASHS", "SCALE", "DICE", "top_k_mask", "kept_count"]


def _check_percentile(value, what: str, upper_open: bool = False) -> float:
    p = float(value)
    ok = 0.0 <= p < 100.0 if upper_open else 0.0 <= p <= 100.0
    if not ok:
        bound = "0 <= p < 100" if upper_open else "0 <= p <= 100"
        raise ScoringError(f"{what} must be a percentile in percent ({bound}), got {value}")
    return p


def kept_count(d: int, percentile: float) -> int:
    """Activations ASH/SCALE keep of d: d - round(d * p / 100), rounding half to even as numpy (and
    the papers' code) do."""
    return d - int(np.round(d * percentile / 100.0))


def top_k_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest entries of each row; among equal values at the cut the
    lowest column indices are kept, so the mask is deterministic."""
    n, d = x.shape
    if k >= d:
        return np.ones_like(x, dtype=bool)
    kth = -np.partition(-x, k - 1, axis=1)[:, k - 1]  # the k-th largest value of each row
    above = x > kth[:, None]
    need = k - above.sum(axis=1)  # >= 1 entries equal to kth still to take
    tie = x == kth[:, None]
    return above | (tie & (np.cumsum(tie, axis=1) <= need[:, None]))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > 0, else 0 (a row whose kept sum is not positive is left unscaled)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


class _HeadEnergy(Scorer):
    """Energy of the head applied to shaped features; subclasses set ``_shape`` (and ``_fit_shape``)."""

    needs_head = True
    grid: dict = {}

    def _fit(self, x, y, head, stats) -> None:
        self.w_, self.b_ = head
        self._fit_shape(x)

    def _fit_shape(self, x: np.ndarray) -> None:
        pass

    def _shape(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _score_batch(self, x):
        return logsumexp(self._shape(x) @ self.w_.T + self.b_, axis=1)


@register_scorer
class ReAct(_HeadEnergy):
    """ReAct: rectified activations (Sun, Guo & Li, NeurIPS 2021).
    score = logsumexp(W min(z, c) + b), c = the ``percentile``-th percentile of all fit activations (90).

    c is one threshold for every unit, from all fit activations pooled (numpy's linear-interpolation
    percentile), as in the paper, pytorch-ood and OpenOOD (which estimate it on training and ID
    validation data respectively; here on the fit features).
    """

    name = "react"
    paper = "Sun, Guo & Li, NeurIPS 2021"
    grid = {"percentile": (85, 90, 95, 99)}

    def __init__(self, percentile: float = 90.0):
        super().__init__()
        self.percentile = _check_percentile(percentile, "react percentile")

    def _fit_shape(self, x):
        self.threshold_ = float(np.percentile(x, self.percentile))

    def _shape(self, x):
        return np.minimum(x, self.threshold_)


@register_scorer
class VRA(_HeadEnergy):
    """VRA: variational rectified activation (Xu, Lian, Liu & Tao, NeurIPS 2023).
    score = logsumexp(W v(z) + b), v(z)_j = 0 if z_j < a_j, min(z_j, b_j) otherwise; a, b = per-unit ``low``/``high`` percentiles of the fit features (60, 90).

    This is the paper's basic VRA (low activations zeroed, high ones clipped; VRA+'s shift of the
    middle part is not included) with per-unit thresholds and the defaults of the authors' CIFAR-10
    command (q1 = 0.6, q2 = 0.9). The peers differ: OpenOOD v1.5 *clips* below (``clip(min=a)``)
    with one global threshold pair (10th/90th percentile, the ``grid`` below is its sweep);
    pytorch-ood clips below too, with per-unit quantiles (defaults 0.01/0.99).
    """

    name = "vra"
    paper = "Xu et al., NeurIPS 2023"
    grid = {"low": (1, 5, 10, 15), "high": (85, 90, 95, 99)}

    def __init__(self, low: float = 60.0, high: float = 90.0):
        super().__init__()
        self.low = _check_percentile(low, "vra low")
        self.high = _check_percentile(high, "vra high")
        if self.low > self.high:
            raise ScoringError(f"vra needs low <= high, got low={low}, high={high}")

    def _fit_shape(self, x):
        self.lower_ = np.percentile(x, self.low, axis=0)
        self.upper_ = np.percentile(x, self.high, axis=0)

    def _shape(self, x):
        return np.where(x < self.lower_, 0.0, np.minimum(x, self.upper_))


class _ASH(_HeadEnergy):
    """Shared by the ASH variants and SCALE: the per-row top-k, k = d - round(d p / 100)."""

    paper = "Djurisic et al., ICLR 2023"
    grid = {"percentile": (65, 70, 75, 80, 85, 90, 95)}

    def __init__(self, percentile: float = 90.0):
        super().__init__()
        self.percentile = _check_percentile(percentile, f"{self.name} percentile", upper_open=True)

    def _fit_shape(self, x):
        d = x.shape[1]
        self.k_ = kept_count(d, self.percentile)
        if self.k_ < 1:
            raise ScoringError(
                f"{self.name}: percentile {self.percentile} keeps no activation of {d}; use a smaller one"
            )


@register_scorer
class ASHP(_ASH):
    """ASH-P: activation pruning (Djurisic, Bozanic, Ashok & Liu, ICLR 2023).
    score = logsumexp(W (z * m) + b), m = mask of the k = d - round(d p / 100) largest entries of z (p = 90).

    Applied to the pooled feature (OpenOOD v1.5's placement; the paper prunes the pre-pooling map of
    ResNets). Ties at the cut keep the lowest indices (torch.topk's choice is unspecified).
    """

    name = "ash_p"

    def _shape(self, x):
        return x * top_k_mask(x, self.k_)


@register_scorer
class ASHB(_ASH):
    """ASH-B: activation binarization (Djurisic, Bozanic, Ashok & Liu, ICLR 2023).
    score = logsumexp(W (m * s1 / k) + b), s1 = sum_j z_j, m = mask of the k largest entries of z (p = 90).

    The kept entries all take the value that preserves the row sum (OpenOOD v1.5's ASH score, on the
    pooled feature). Ties at the cut keep the lowest indices.
    """

    name = "ash_b"

    def _shape(self, x):
        return top_k_mask(x, self.k_) * (x.sum(axis=1) / self.k_)[:, None]


@register_scorer
class ASHS(_ASH):
    """ASH-S: activation scaling (Djurisic, Bozanic, Ashok & Liu, ICLR 2023).
    score = logsumexp(W (z * m) exp(s1 / s2) + b), s1 = sum_j z_j, s2 = sum of the k kept entries (p = 90).

    Meant for non-negative (post-ReLU) features; a row whose kept sum is not positive is left
    unscaled (factor 1) instead of dividing by zero. A factor beyond exp(709) overflows and the
    scorer reports it (ScoringError).
    """

    name = "ash_s"

    def _shape(self, x):
        pruned = x * top_k_mask(x, self.k_)
        r = _ratio(x.sum(axis=1), pruned.sum(axis=1))
        return pruned * np.exp(r)[:, None]


@register_scorer
class SCALE(_ASH):
    """SCALE: activation scaling without pruning (Xu, Chen, Franchi & Yao, ICLR 2024).
    score = logsumexp(W z exp(s1 / s2) + b), s1 = sum_j z_j, s2 = sum of the k = d - round(d p / 100) largest entries (p = 85).

    ASH-S's factor applied to the whole pooled feature (the paper and OpenOOD v1.5 scale after the
    last pooling). Rows whose top-k sum is not positive are left unscaled, as in ASH-S.
    """

    name = "scale"
    paper = "Xu et al., ICLR 2024"

    def __init__(self, percentile: float = 85.0):
        super().__init__(percentile)

    def _shape(self, x):
        top = np.where(top_k_mask(x, self.k_), x, 0.0).sum(axis=1)
        return x * np.exp(_ratio(x.sum(axis=1), top))[:, None]


@register_scorer
class DICE(_HeadEnergy):
    """DICE: directed sparsification of the head (Sun & Li, ECCV 2022).
    score = logsumexp((W * M) z + b), M_cj = [W_cj mu_j > the p-th percentile of all W_cj mu_j] (p = 90), mu = mean fit feature.

    The contribution matrix uses the mean of the fit features (the paper: the training set). The
    ``grid`` is the sparsity sweep of the paper's ablation (pytorch-ood's); OpenOOD v1.5 sweeps only
    p = 90.
    """

    name = "dice"
    paper = "Sun & Li, ECCV 2022"
    grid = {"p": (10, 30, 50, 70, 90)}

    def __init__(self, p: float = 90.0):
        super().__init__()
        self.p = _check_percentile(p, "dice p", upper_open=True)

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        self.mean_ = x.mean(axis=0)
        contrib = w * self.mean_
        self.threshold_ = float(np.percentile(contrib, self.p))
        self.mask_ = contrib > self.threshold_
        self.w_, self.b_ = w * self.mask_, b

    def _shape(self, x):
        return x
