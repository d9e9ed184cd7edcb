"""Streaming per-class statistics of labelled features, in float64.

:class:`ClassStats` keeps, for C classes and d-dimensional features,

* ``counts`` (C,)            number of samples per class,
* ``means`` (C, d)           class means mu_c,
* ``within_scatter`` (d, d)  sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T, pooled over classes,
* ``class_sq`` (C,)          sum_{i: y_i = c} ||h_i - mu_c||^2 (for the CDNV),

in O(C d + d^2) memory whatever the number of samples. Each batch is reduced to its own per-class
means and pooled scatter (one sparse one-hot product and one d x d GEMM, no Python loop over
samples or classes) and merged into the running totals with the pairwise update of Chan, Golub
and LeVeque (1979): for one class with running (n_a, mu_a, S_a) and batch (n_b, mu_b, S_b),

    n = n_a + n_b,  delta = mu_b - mu_a,  mu = mu_a + delta n_b / n,
    S = S_a + S_b + (n_a n_b / n) delta delta^T.

Summed over classes, the S terms give the pooled within-class scatter; the trace of each class's
term gives ``class_sq``. Every sum runs on batch-centred values, so the update is numerically
stable (no raw second moments are accumulated), and :meth:`ClassStats.merge` of two accumulators
is exact up to rounding. Classes that never receive a sample keep count 0 and are excluded by the
derived quantities (``present``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import ScoringError
from ..validation import as_numpy, check_class_labels, check_finite_rows

__all__ = ["ClassStats", "as_numpy"]


class ClassStats:
    """Float64 streaming class counts, means, pooled within-class scatter and per-class spread.

    ``update(x, y)`` adds a batch; ``merge(other)`` returns the statistics of the union;
    ``ClassStats.from_features(x, y, num_classes)`` builds them in batches.
    """

    def __init__(self, num_classes: int, dim: int):
        if int(num_classes) < 1 or int(dim) < 1:
            raise ScoringError(
                f"ClassStats needs num_classes >= 1 and dim >= 1, got {num_classes} and {dim}; "
                "pass the classifier's class count and the feature width"
            )
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.counts = np.zeros(self.num_classes, dtype=np.int64)
        self.means = np.zeros((self.num_classes, self.dim), dtype=np.float64)
        self.within_scatter = np.zeros((self.dim, self.dim), dtype=np.float64)
        self.class_sq = np.zeros(self.num_classes, dtype=np.float64)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_features(cls, x, y, num_classes: int, batch_size: int = 4096) -> ClassStats:
        """Statistics of features ``x`` (n, d) with labels ``y`` (n,), accumulated ``batch_size`` rows at a time."""
        x = x if hasattr(x, "shape") else as_numpy(x)
        if len(x.shape) != 2:
            raise ScoringError(
                f"features must be a 2-D (samples, dim) array, got shape {tuple(x.shape)}; "
                "flatten or pool them first"
            )
        stats = cls(num_classes, x.shape[1])
        y = as_numpy(y)
        if y.shape != (x.shape[0],):
            raise ScoringError(
                f"got {x.shape[0]} feature rows but labels of shape {tuple(y.shape)}; "
                "pass one label per row"
            )
        batch_size = max(1, int(batch_size))
        for start in range(0, x.shape[0], batch_size):
            stats.update(x[start : start + batch_size], y[start : start + batch_size])
        return stats

    def _check_batch(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x = as_numpy(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ScoringError(
                f"features of shape {tuple(x.shape)} do not match ClassStats(dim={self.dim}); "
                "use features of the same layer throughout"
            )
        y = check_class_labels(y, x.shape[0], self.num_classes)
        check_finite_rows(x, "feature rows", "drop those rows or fix the model/inputs that produced them")
        return x, y

    def update(self, x, y) -> ClassStats:
        """Add a batch: features ``x`` (n, d) (numpy or torch) with integer labels ``y`` (n,)."""
        x, y = self._check_batch(x, y)
        n = x.shape[0]
        if n == 0:
            return self
        counts_b = np.bincount(y, minlength=self.num_classes)
        onehot = sp.csr_matrix((np.ones(n), (y, np.arange(n))), shape=(self.num_classes, n))
        present = np.flatnonzero(counts_b)
        nb = counts_b[present].astype(np.float64)
        mean_b = np.asarray(onehot @ x)[present] / nb[:, None]
        # centre the batch on its own class means: stable second moments
        full_mean_b = np.zeros((self.num_classes, self.dim))
        full_mean_b[present] = mean_b
        xc = full_mean_b[y]
        np.subtract(x, xc, out=xc)
        scatter_b = xc.T @ xc
        sq_b = np.bincount(y, weights=np.einsum("ij,ij->i", xc, xc), minlength=self.num_classes)
        self._combine(present, nb, mean_b, scatter_b, sq_b[present])
        return self

    def _combine(self, present, nb, mean_b, scatter_b, sq_b) -> None:
        """Chan et al. merge of per-class (count nb, mean mean_b, spread sq_b) + pooled scatter into self."""
        na = self.counts[present].astype(np.float64)
        ntot = na + nb
        delta = mean_b - self.means[present]
        self.means[present] += delta * (nb / ntot)[:, None]
        w = na * nb / ntot
        self.within_scatter += scatter_b
        self.within_scatter += (delta * w[:, None]).T @ delta
        # keep the scatter exactly symmetric whatever the rounding of the two products
        self.within_scatter = 0.5 * (self.within_scatter + self.within_scatter.T)
        self.class_sq[present] += sq_b + w * np.einsum("ij,ij->i", delta, delta)
        self.counts[present] += nb.astype(np.int64)

    def merge(self, other: ClassStats) -> ClassStats:
        """A new ClassStats holding the statistics of the samples of ``self`` and ``other`` together."""
        if not isinstance(other, ClassStats) or (other.num_classes, other.dim) != (
            self.num_classes,
            self.dim,
        ):
            raise ScoringError(
                "can only merge ClassStats with the same num_classes and dim; "
                "accumulate features of one layer and one label set"
            )
        out = self.copy()
        present = np.flatnonzero(other.counts)
        if present.size:
            out._combine(
                present,
                other.counts[present].astype(np.float64),
                other.means[present],
                other.within_scatter,
                other.class_sq[present],
            )
        return out

    def copy(self) -> ClassStats:
        """An independent copy."""
        out = ClassStats(self.num_classes, self.dim)
        out.counts = self.counts.copy()
        out.means = self.means.copy()
        out.within_scatter = self.within_scatter.copy()
        out.class_sq = self.class_sq.copy()
        return out

    # ------------------------------------------------------------------ derived
    @property
    def n(self) -> int:
        """Total number of samples seen."""
        return int(self.counts.sum())

    @property
    def present(self) -> np.ndarray:
        """Indices of the classes with at least one sample (the others are excluded everywhere)."""
        return np.flatnonzero(self.counts)

    def _require_samples(self) -> None:
        if self.n == 0:
            raise ScoringError(
                "ClassStats holds no samples; update it with labelled features first"
            )

    @property
    def sigma_w(self) -> np.ndarray:
        """Within-class covariance Sigma_W = within_scatter / N (d, d)."""
        self._require_samples()
        return self.within_scatter / self.n

    @property
    def global_mean(self) -> np.ndarray:
        """mu_G: the unweighted mean of the class means of the present classes (Papyan et al.)."""
        self._require_samples()
        return self.means[self.present].mean(axis=0)

    @property
    def sample_mean(self) -> np.ndarray:
        """The count-weighted mean of all samples (d,)."""
        self._require_samples()
        return self.counts @ self.means / self.n

    @property
    def centered_means(self) -> np.ndarray:
        """M: rows mu_c - mu_G for the present classes (K, d)."""
        return self.means[self.present] - self.global_mean

    @property
    def sigma_b(self) -> np.ndarray:
        """Between-class covariance Sigma_B = M^T M / K over the K present classes (d, d)."""
        m = self.centered_means
        return m.T @ m / m.shape[0]

    @property
    def total_scatter(self) -> np.ndarray:
        """sum_i (h_i - m)(h_i - m)^T about the sample mean m: within + count-weighted between scatter."""
        dm = self.means - self.sample_mean
        return self.within_scatter + (dm * self.counts[:, None]).T @ dm

    @property
    def class_var(self) -> np.ndarray:
        """Per-class mean squared distance to the class mean, class_sq / counts (NaN for absent classes)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.class_sq / np.maximum(self.counts, 1), np.nan)

    def __repr__(self) -> str:
        return (
            f"ClassStats(num_classes={self.num_classes}, dim={self.dim}, n={self.n}, "
            f"present={self.present.size})"
        )
