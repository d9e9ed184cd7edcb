"""Scores computed from the logits alone: MSP, MaxLogit, energy, GEN (fitting is a no-op)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..errors import ScoringError
from .base import Scorer, check_matrix
from .registry import register_scorer

__all__ = ["MSP", "MaxLogit", "Energy", "GEN"]


class _LogitScorer(Scorer):
    input = "logits"

    def fit(self, features=None, labels=None, head=None, stats=None):
        """Nothing to learn; if logits are given, their width (number of classes) is checked later."""
        self.dim_ = None if features is None else check_matrix(features, "fit logits").shape[1]
        self._fitted = True
        return self

    def _fit(self, x, y, head, stats) -> None:  # not used: fit is overridden
        pass


@register_scorer
class MSP(_LogitScorer):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).
    score = max_c softmax(l)_c = 1 / sum_c exp(l_c - max l)."""

    name = "msp"
    default = True
    paper = "Hendrycks & Gimpel, ICLR 2017"

    def __init__(self):
        super().__init__()

    def _score_batch(self, x):
        return 1.0 / np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1)


@register_scorer
class MaxLogit(_LogitScorer):
    """Maximum logit (Hendrycks et al., ICML 2022, "Scaling OOD detection to real-world settings").
    score = max_c l_c."""

    name = "maxlogit"
    default = True
    paper = "Hendrycks et al., ICML 2022"

    def __init__(self):
        super().__init__()

    def _score_batch(self, x):
        return x.max(axis=1)


@register_scorer
class Energy(_LogitScorer):
    """Negative free energy (Liu et al., NeurIPS 2020, "Energy-based OOD detection").
    score = T logsumexp_c(l_c / T), T = 1 by default."""

    name = "energy"
    grid = {"T": (1.0, 10.0, 100.0, 1000.0)}
    default = True
    paper = "Liu et al., NeurIPS 2020"

    def __init__(self, T: float = 1.0):
        super().__init__()
        if not float(T) > 0:
            raise ScoringError(f"energy temperature T must be > 0, got {T}; use e.g. T=1")
        self.T = float(T)

    def _score_batch(self, x):
        return self.T * logsumexp(x / self.T, axis=1)


@register_scorer
class GEN(_LogitScorer):
    """Generalized entropy (Liu, Lochman & Zach, CVPR 2023, "GEN").
    score = -sum_{j in top-M} p_j^gamma (1 - p_j)^gamma, p = softmax(l), M = min(M, C), gamma = 0.1."""

    name = "gen"
    grid = {"gamma": (0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0), "M": (10, 50, 100)}
    default = True
    paper = "Liu, Lochman & Zach, CVPR 2023"

    def __init__(self, gamma: float = 0.1, M: int = 100):
        super().__init__()
        if not float(gamma) > 0 or int(M) < 1:
            raise ScoringError(f"gen needs gamma > 0 and M >= 1, got gamma={gamma}, M={M}")
        self.gamma = float(gamma)
        self.M = int(M)

    def _score_batch(self, x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        m = min(self.M, p.shape[1])
        if m < p.shape[1]:
            p = np.partition(p, p.shape[1] - m, axis=1)[:, p.shape[1] - m :]
        q = np.clip(1.0 - p, 0.0, 1.0)
        return -np.sum(p**self.gamma * q**self.gamma, axis=1)
