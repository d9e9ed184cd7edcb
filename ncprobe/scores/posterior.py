"""Scores of the softmax posterior beyond MSP: negative entropy, temperature-scaled MSP, KL matching.

Everything is computed from ``log_softmax(l) = l - logsumexp(l)`` in float64, so posteriors whose
small entries underflow (or whose top entry rounds to 1) keep exact, finite scores; the float32
reference implementations clip such probabilities instead (noted per scorer).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import logsumexp

from ..errors import ScoringError
from .base import Scorer, check_matrix
from .logit import _LogitScorer
from .registry import register_scorer

__all__ = ["Entropy", "TempScale", "KLMatching", "log_softmax", "fit_temperature"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, finite for finite logits and accurate near one-hot posteriors:
    ``(l - max) - log1p(sum of the other exp(l_j - max))``, so the top class's log-probability keeps
    its digits when the others are tiny (``l - logsumexp(l)`` rounds it at the scale of max l)."""
    rows = np.arange(logits.shape[0])
    top = np.argmax(logits, axis=1)
    shifted = logits - logits[rows, top][:, None]
    rest = np.exp(shifted)
    rest[rows, top] = 0.0
    return shifted - np.log1p(rest.sum(axis=1))[:, None]


@register_scorer
class Entropy(_LogitScorer):
    """Negative softmax entropy (Chan, Rottmann & Gottschalk, ICCV 2021).
    score = -H(p) = sum_c p_c log p_c, p = softmax(l); between -log C (uniform) and 0 (one-hot).

    pytorch-ood's ``Entropy`` clips p to [1e-7, 1] before the logarithm, so a class with p_c < 1e-7
    adds p_c log(1e-7) instead of p_c log p_c; here ``log p`` is the exact log-softmax (the two agree
    whenever no probability is below 1e-7).
    """

    name = "entropy"
    paper = "Chan, Rottmann & Gottschalk, ICCV 2021"

    def __init__(self):
        super().__init__()

    def _score_batch(self, x):
        lp = log_softmax(x)
        return np.einsum("ij,ij->i", np.exp(lp), lp)


def _nll_slope(logits: np.ndarray, y: np.ndarray, beta: float) -> tuple[float, float]:
    """d/dbeta and d2/dbeta2 of the mean NLL of softmax(beta * l): mean(E_p[l] - l_y), mean(Var_p[l])."""
    lp = log_softmax(beta * logits)
    p = np.exp(lp)
    mean_l = np.einsum("ij,ij->i", p, logits)
    var_l = np.einsum("ij,ij->i", p, logits * logits) - mean_l**2
    picked = logits[np.arange(len(y)), y]
    return float(np.mean(mean_l - picked)), float(np.mean(np.maximum(var_l, 0.0)))


def fit_temperature(logits, labels, t_min: float = 1e-2, t_max: float = 1e2) -> tuple[float, bool]:
    """The temperature T minimizing the mean NLL of ``softmax(logits / T)`` at ``labels``.

    The NLL is convex in beta = 1/T (its second derivative is the mean variance of the logits under
    the scaled posterior), so its minimum is the root of the first derivative, found by Newton steps
    kept inside a bisection bracket. Returns ``(T, clamped)``; ``clamped`` is True when the minimum
    lies outside [t_min, t_max] and T was set to the nearer end.
    """
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    lo, hi = 1.0 / t_max, 1.0 / t_min  # bracket on beta
    g_lo, _ = _nll_slope(x, y, lo)
    if g_lo >= 0:  # the NLL increases from beta = 1/t_max on: the optimum is hotter than t_max
        return t_max, True
    g_hi, _ = _nll_slope(x, y, hi)
    if g_hi <= 0:  # still decreasing at beta = 1/t_min (separable fit logits)
        return t_min, True
    beta = min(max(1.0, lo), hi)
    for _ in range(200):
        g, h = _nll_slope(x, y, beta)
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = g / h if h > 0 else np.inf
        nxt = beta - step
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - beta) <= 1e-13 * beta or hi - lo <= 1e-13 * hi:
            beta = nxt
            break
        beta = nxt
    return 1.0 / beta, False


@register_scorer
class TempScale(Scorer):
    """Temperature-scaled MSP (Guo, Pleiss, Sun & Weinberger, ICML 2017).
    score = max_c softmax(l / T)_c, T = argmin_T mean NLL(softmax(l / T), y) on the fit logits, or a fixed ``T``.

    ``T=None`` (default) fits T as the paper does (OpenOOD v1.5's ``temperature_scaling`` and
    pytorch-ood's ``TemperatureScaling`` too): the exact minimizer of the NLL of the fit logits and
    labels (found to ~1e-13; the peers stop L-BFGS after 50 iterations), limited to [0.01, 100]
    with a warning when the optimum lies outside. The paper and OpenOOD fit T on held-out ID
    *validation* logits; ncprobe's fit set is what ``fit`` gets (usually training data, where a
    well-fitted network gives T < 1 or hits the 0.01 limit when the logits separate the classes), so
    use a held-out split or pass ``T``. A fixed ``T`` needs no labels. T = 1 is MSP; there is no
    fixed T = 1000 default (that is ODIN's temperature, part of a method that perturbs the input).
    """

    name = "tempscale"
    input = "logits"
    needs_labels = True
    paper = "Guo et al., ICML 2017"
    grid = {}
    t_range = (1e-2, 1e2)

    def __init__(self, T: float | None = None):
        super().__init__()
        if T is not None and not float(T) > 0:
            raise ScoringError(
                f"tempscale temperature T must be > 0, got {T}; or pass T=None to fit it"
            )
        self.T = None if T is None else float(T)

    def fit(self, features=None, labels=None, head=None, stats=None):
        """Fit T on the fit logits and labels; with a fixed ``T`` nothing is learned."""
        if self.T is None:
            return super().fit(features, labels, head=head, stats=stats)
        self.dim_ = None if features is None else check_matrix(features, "fit logits").shape[1]
        self.T_ = self.T
        self.clamped_ = False
        self._fitted = True
        return self

    def _fit(self, x, y, head, stats) -> None:
        if y.max() >= x.shape[1]:
            raise ScoringError(
                f"tempscale: label {int(y.max())} but the logits have {x.shape[1]} classes; "
                "pass the labels of the fit logits"
            )
        self.T_, self.clamped_ = fit_temperature(x, y, *self.t_range)
        if self.clamped_:
            warnings.warn(
                f"tempscale: the NLL optimum of the fit logits lies outside T in {self.t_range}; "
                f"using T={self.T_:g} (fit on held-out ID logits, or pass T=)",
                stacklevel=5,
            )

    def _score_batch(self, x):
        s = x / self.T_
        return 1.0 / np.exp(s - s.max(axis=1, keepdims=True)).sum(axis=1)


@register_scorer
class KLMatching(Scorer):
    """KL matching (Hendrycks et al., ICML 2022, "Scaling OOD detection to real-world settings").
    score = -min_k KL(p || d_k), p = softmax(l), d_k = mean posterior of the fit rows the model predicts as k.

    As in the paper (and pytorch-ood's ``KLMatching``, OpenOOD's ``kl_matching``) the divergence runs
    from the test posterior p to the class template d_k, and the templates use predicted classes, no
    labels; k runs over the classes predicted for at least one fit row. The paper estimates d_k on a
    validation set; here on the fit logits. ``log d_k`` is kept as a log-mean-exp of the fit rows'
    log-posteriors, so a template entry that underflows as a probability stays finite (pytorch-ood
    replaces log 0 by the lowest float instead).
    """

    name = "klm"
    input = "logits"
    paper = "Hendrycks et al., ICML 2022"
    grid = {}

    def __init__(self):
        super().__init__()

    def _fit(self, x, y, head, stats) -> None:
        lp = log_softmax(x)
        pred = np.argmax(x, axis=1)
        order = np.argsort(pred, kind="stable")
        classes, counts = np.unique(pred, return_counts=True)
        groups = np.split(lp[order], np.cumsum(counts)[:-1])
        self.classes_ = classes
        self.log_templates_ = np.stack(
            [logsumexp(g, axis=0) - math.log(len(g)) for g in groups]
        )  # (K, C)

    def _score_batch(self, x):
        lp = log_softmax(x)
        p = np.exp(lp)
        kl = np.einsum("ij,ij->i", p, lp)[:, None] - p @ self.log_templates_.T  # (n, K)
        return -kl.min(axis=1)
