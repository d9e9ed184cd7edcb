"""Scores that compare a penultimate feature with stored ID fit features and re-apply the head.

* SHE keeps one pattern per class (the mean of the correctly classified fit features) and scores the
  inner product with the pattern of the predicted class (a Hopfield energy);
* NNGuide keeps every fit feature, normalized and scaled by its energy, and multiplies the test
  energy by the mean similarity to the k most similar of them.

Both need the head (predictions, energies), so the pipeline runs them at ``penultimate`` only.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import logsumexp

from ..errors import ScoringError
from .base import Scorer
from .registry import register_scorer

__all__ = ["SHE", "NNGuide", "mean_top_k"]

#: float64 similarities computed at once by NNGuide (32 MB)
_SIM_BLOCK = 1 << 22


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms > 0, norms, 1.0)[:, None]


def mean_top_k(q: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest inner products of each row of q with the rows of bank (exact, blocked)."""
    n_bank = bank.shape[0]
    out = np.empty(q.shape[0])
    rows = max(1, _SIM_BLOCK // n_bank)
    for s in range(0, q.shape[0], rows):
        sims = q[s : s + rows] @ bank.T
        top = np.partition(sims, n_bank - k, axis=1)[:, n_bank - k :] if k < n_bank else sims
        out[s : s + rows] = top.mean(axis=1)
    return out


@register_scorer
class SHE(Scorer):
    """SHE: simplified Hopfield energy (Zhang et al., ICLR 2023).
    score = z . S_y^, y^ = argmax(W z + b), S_c = mean of the fit features of class c that the head classifies correctly.

    The inner product is OpenOOD v1.5's default metric and pytorch-ood's score. A class with no
    correctly classified fit sample (absent from the fit labels, or never predicted right) stores
    an empty pattern, so rows predicted as that class score 0 (``missing_patterns_`` lists the
    classes present in the labels that got none). Deliberate difference: pytorch-ood raises and
    OpenOOD scores NaN there; a zero score lets ``--scorers all`` run on any head.
    """

    name = "she"
    paper = "Zhang et al., ICLR 2023"
    needs_head = True
    needs_labels = True
    grid = {}

    def __init__(self):
        super().__init__()

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        n_cls = w.shape[0]
        if y.max() >= n_cls:
            raise ScoringError(
                f"she: label {int(y.max())} but the head has {n_cls} classes; pass the head of this layer"
            )
        correct = np.argmax(x @ w.T + b, axis=1) == y
        counts = np.bincount(y[correct], minlength=n_cls)
        self.missing_patterns_ = np.setdiff1d(np.unique(y), np.flatnonzero(counts))
        sums = np.zeros((n_cls, x.shape[1]))
        np.add.at(sums, y[correct], x[correct])
        self.patterns_ = sums / np.maximum(counts, 1)[:, None]
        self.w_, self.b_ = w, b

    def _score_batch(self, x):
        top = np.argmax(x @ self.w_.T + self.b_, axis=1)
        return np.einsum("ij,ij->i", x, self.patterns_[top])


@register_scorer
class NNGuide(Scorer):
    """NNGuide: nearest-neighbour guidance (Park, Jung & Teoh, ICCV 2023).
    score = E(z) * mean of the k largest <z / ||z||, E(x_i) x_i / ||x_i||> over the fit features x_i, E = logsumexp(W . + b), k = 10.

    k = 10 is the authors' default; OpenOOD v1.5 uses k = 100 (both in the ``grid``). The bank is
    every fit feature (the paper and OpenOOD subsample the training set, e.g. 1% of ImageNet: pass
    such a subset as the fit set). The top-k search is exact (float64, blocked). ``k`` above the
    number of fit rows is clamped to it with a warning. Zero feature rows stay zero when normalized.
    """

    name = "nnguide"
    paper = "Park, Jung & Teoh, ICCV 2023"
    needs_head = True
    grid = {"k": (10, 100)}

    def __init__(self, k: int = 10):
        super().__init__()
        if int(k) < 1:
            raise ScoringError(f"nnguide needs k >= 1, got k={k}")
        self.k = int(k)

    def _fit(self, x, y, head, stats) -> None:
        w, b = head
        n = x.shape[0]
        self.k_ = self.k
        if self.k > n:
            warnings.warn(
                f"nnguide: k={self.k} exceeds the {n} fit samples; using k={n}", stacklevel=4
            )
            self.k_ = n
        self.w_, self.b_ = w, b
        energy = logsumexp(x @ w.T + b, axis=1)
        self.bank_ = _unit_rows(x) * energy[:, None]

    def _score_batch(self, x):
        energy = logsumexp(x @ self.w_.T + self.b_, axis=1)
        return energy * mean_top_k(_unit_rows(x), self.bank_, self.k_)
