"""Geometric feature scores: feature norm and nearest-class-centre cosine."""

from __future__ import annotations

import numpy as np

from ..stats.accumulator import ClassStats
from .base import Scorer
from .registry import register_scorer

__all__ = ["FeatNorm", "NCC"]


@register_scorer
class FeatNorm(Scorer):
    """Feature norm (the follow-up to Haas, Yolland & Rabus, TMLR 2023: normalization removed at test time).
    score = ||z||_2."""

    name = "featnorm"
    default = True
    paper = "Haas, Yolland & Rabus, TMLR 2023"

    def __init__(self):
        super().__init__()

    def fit(self, features=None, labels=None, head=None, stats=None):
        """Nothing to learn; the fit width (if given) is checked when scoring."""
        self.dim_ = None
        if features is not None:
            super().fit(features, labels, head=head, stats=stats)
        self._fitted = True
        return self

    def _fit(self, x, y, head, stats) -> None:
        pass

    def _score_batch(self, x):
        return np.sqrt(np.einsum("ij,ij->i", x, x))


@register_scorer
class NCC(Scorer):
    """Nearest-class-centre cosine (neural collapse, Papyan et al. 2020; cf. NCC accuracy).
    score = max_c cos(z - mu_G, mu_c - mu_G) with mu_G the mean of the class means (center=True), else max_c cos(z, mu_c).

    Centering is the default because neural collapse places the *centred* means on a simplex ETF;
    uncentred ReLU features make every cosine large. A row at the centre (zero vector) scores 0.
    Accepts ``stats`` (the means) instead of features.
    """

    name = "ncc"
    default = True
    paper = "Papyan, Han & Donoho, PNAS 2020"
    needs_labels = True

    def __init__(self, center: bool = True):
        super().__init__()
        self.center = bool(center)

    def _can_use_stats(self) -> bool:
        return True

    def _fit(self, x, y, head, stats) -> None:
        if stats is None:
            stats = ClassStats.from_features(x, y, int(y.max()) + 1)
        means = stats.means[stats.present]
        self.center_ = means.mean(axis=0) if self.center else np.zeros(stats.dim)
        m = means - self.center_
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        self.directions_ = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)

    def _score_batch(self, x):
        z = x - self.center_
        norms = np.linalg.norm(z, axis=1)
        cos = (z @ self.directions_.T).max(axis=1)
        return np.divide(cos, norms, out=np.zeros_like(norms), where=norms > 0)
