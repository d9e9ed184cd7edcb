"""Scores from a linear probe trained on the fit features."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import logsumexp

from ..errors import ScoringError
from .base import Scorer
from .registry import register_scorer

__all__ = ["ProbeEnergy"]


@register_scorer
class ProbeEnergy(Scorer):
    """Energy of a linear probe on L2-normalized features (Harun, Gallardo & Kanan, ICML 2025).
    score = T logsumexp((W u + b) / T), u = z / ||z||, (W, b) a logistic regression fitted on the ID fit set.

    Lets any layer, not only the classifier's input, be scored with a logit-based score: the paper
    detects OOD this way at the projector. ``c`` is the inverse L2 penalty, ``max_iter`` the fixed
    optimization budget (lbfgs; a run that hits it is used as it is).
    """

    name = "probe_energy"
    grid = {"c": (0.1, 1.0, 10.0)}
    default = True
    paper = "Harun, Gallardo & Kanan, ICML 2025"
    needs_labels = True

    def __init__(self, temperature: float = 1.0, c: float = 1.0, max_iter: int = 200, seed: int = 0):
        super().__init__()
        self.temperature = float(temperature)
        self.c = float(c)
        self.max_iter = int(max_iter)
        self.seed = int(seed)
        if not (self.temperature > 0 and self.c > 0 and self.max_iter >= 1 and 0 <= self.seed < 2**32):
            raise ScoringError(
                f"probe_energy needs temperature > 0, c > 0, max_iter >= 1 and 0 <= seed < 2^32, got "
                f"temperature={temperature}, c={c}, max_iter={max_iter}, seed={seed}"
            )

    @staticmethod
    def _normalize(x: np.ndarray) -> np.ndarray:
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
        return x / np.maximum(norms, np.finfo(np.float64).tiny)

    def _fit(self, x, y, head, stats) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        probe = LogisticRegression(C=self.c, max_iter=self.max_iter, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(self._normalize(x), y)
        coef, intercept = probe.coef_, probe.intercept_
        if coef.shape[0] == 1:  # two classes: sklearn keeps one row; the softmax pair is (-f/2, f/2)
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_, self.intercept_ = coef, intercept

    def _score_batch(self, x):
        logits = self._normalize(x) @ self.coef_.T + self.intercept_
        return self.temperature * logsumexp(logits / self.temperature, axis=1)
