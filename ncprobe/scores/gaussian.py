"""Gaussian feature scores: Mahalanobis (shared covariance), relative Mahalanobis, GDA (DDU).

All covariance work is float64.

* Mahalanobis / RMDS invert the covariance as a *pseudo-inverse* (as the reference code of Lee et
  al. does with ``sklearn``'s ``EmpiricalCovariance``/``pinvh``): eigenvalues below
  ``rcond * lambda_max`` (default ``rcond = d * eps``) are dropped, so rank-deficient covariances
  (collinear features, fewer samples than dimensions) give finite distances measured inside the
  span of the fit data. Distances use the whitening matrix ``Wh = V_r diag(lambda_r^-1/2)``:
  ``d_c(z) = ||Wh^T (z - mu_c)||^2 = ||a||^2 - 2 a.b_c + ||b_c||^2`` with ``a = Wh^T (z - m)``,
  ``b_c = Wh^T (mu_c - m)`` (m the mean of the class means, to limit cancellation): one GEMM for all
  classes.
* GDA keeps one full covariance per class; each is factored by Cholesky with a jitter raised until it
  succeeds (see :class:`GDA`), and the quadratic forms are batched triangular solves (BLAS ``trsm``).

Classes without fit samples are ignored (scores use the classes present in the fit labels).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dtrsm

from ..errors import ScoringError
from ..stats._threads import single_blas_thread
from ..stats.accumulator import ClassStats
from .base import Scorer
from .registry import register_scorer

__all__ = ["Mahalanobis", "RMDS", "GDA", "whitener"]


def whitener(cov: np.ndarray, rcond: float | None = None) -> np.ndarray:
    """Wh (d, r) with Wh Wh^T = pinv(cov): eigenvectors over sqrt(eigenvalue), tiny eigenvalues dropped."""
    cov = np.asarray(cov, np.float64)
    with single_blas_thread():
        lam, v = np.linalg.eigh(0.5 * (cov + cov.T))
    if not lam[-1] > 0 or not np.isfinite(lam).all():
        raise ScoringError(
            "the fit covariance is zero or not finite (all fit features identical within classes?); "
            "check the features of this layer"
        )
    rc = cov.shape[0] * np.finfo(np.float64).eps if rcond is None else float(rcond)
    keep = lam > lam[-1] * rc
    return v[:, keep] / np.sqrt(lam[keep])


def _stats_from(x, y, stats: ClassStats | None) -> ClassStats:
    if stats is not None:
        return stats
    # large batches (about 4M values) keep the per-batch overhead small at low d
    rows = max(4096, (1 << 22) // x.shape[1])
    return ClassStats.from_features(x, y, int(y.max()) + 1, batch_size=rows)


class _SharedGaussian(Scorer):
    needs_labels = True

    def _can_use_stats(self) -> bool:
        return True

    def _fit_classes(self, stats: ClassStats) -> None:
        p = stats.present
        self.classes_ = p
        self.center_ = stats.means[p].mean(axis=0)
        self.whiten_ = whitener(stats.sigma_w, self.rcond)
        self.center_w_ = self.center_ @ self.whiten_
        self.means_w_ = (stats.means[p] - self.center_) @ self.whiten_  # (K, r)
        self.means_sq_ = np.einsum("ij,ij->i", self.means_w_, self.means_w_)

    def _class_distances(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances (n, K) to every present class under Sigma_W^+."""
        a = x @ self.whiten_
        a -= self.center_w_
        d = np.einsum("ij,ij->i", a, a)[:, None] - 2.0 * (a @ self.means_w_.T) + self.means_sq_
        return np.maximum(d, 0.0)


@register_scorer
class Mahalanobis(_SharedGaussian):
    """Mahalanobis distance to the closest class (Lee et al., NeurIPS 2018).
    score = -min_c (z - mu_c)^T Sigma_W^+ (z - mu_c), Sigma_W the shared within-class covariance."""

    name = "mahalanobis"
    default = True
    paper = "Lee et al., NeurIPS 2018"

    def __init__(self, rcond: float | None = None):
        super().__init__()
        if rcond is not None and not 0 <= float(rcond) < 1:
            raise ScoringError(f"{self.name} rcond must be in [0, 1) (or None for the default), got {rcond}")
        self.rcond = rcond

    def _fit(self, x, y, head, stats) -> None:
        """Uses ``stats`` (means, Sigma_W) when given, without re-reading the features."""
        self._fit_classes(_stats_from(x, y, stats))

    def _score_batch(self, x):
        return -self._class_distances(x).min(axis=1)


@register_scorer
class RMDS(_SharedGaussian):
    """Relative Mahalanobis distance (Ren et al. 2021, "A simple fix to Mahalanobis distance").
    score = -min_c [MD_c(z) - MD_0(z)], MD_0 under one Gaussian N(mean, total covariance) of all fit data."""

    name = "rmds"
    default = True
    paper = "Ren et al., arXiv 2021"

    def __init__(self, rcond: float | None = None):
        super().__init__()
        if rcond is not None and not 0 <= float(rcond) < 1:
            raise ScoringError(f"{self.name} rcond must be in [0, 1) (or None for the default), got {rcond}")
        self.rcond = rcond

    def _fit(self, x, y, head, stats) -> None:
        stats = _stats_from(x, y, stats)
        self._fit_classes(stats)
        self.bg_mean_ = stats.sample_mean
        self.bg_whiten_ = whitener(stats.total_scatter / stats.n, self.rcond)

    def _score_batch(self, x):
        b = (x - self.bg_mean_) @ self.bg_whiten_
        md0 = np.einsum("ij,ij->i", b, b)
        return md0 - self._class_distances(x).min(axis=1)


@register_scorer
class GDA(Scorer):
    """Gaussian discriminant analysis log-density, the DDU score (Mukhoti et al., CVPR 2023).
    score = logsumexp_c log N(z; mu_c, Sigma_c), Sigma_c = X_c^T X_c / (n_c - 1) (+ jitter), uniform weights.

    Each Sigma_c (float64) is Cholesky-factored as is; if that fails, a jitter ``eps * s_c * I`` with
    ``s_c`` the mean diagonal of Sigma_c is added, starting at ``eps = jitter`` and multiplied by 10
    until the factorization succeeds (``jitter_`` records what each class needed; at most ``s_c``).
    A class with a single fit sample has no covariance: ScoringError (no silent fallback). Class
    weights are uniform and left out, as in DDU (a constant shift of every score).
    """

    name = "gda"
    default = True
    paper = "Mukhoti et al., CVPR 2023"
    min_per_class = 2
    needs_labels = True

    def __init__(self, jitter: float = 1e-12):
        super().__init__()
        if not float(jitter) > 0:
            raise ScoringError(f"gda jitter must be > 0, got {jitter}")
        self.jitter = float(jitter)

    def _fit(self, x, y, head, stats) -> None:
        counts = np.bincount(y)
        classes = np.flatnonzero(counts)
        single = classes[counts[classes] == 1]
        if single.size:
            raise ScoringError(
                f"GDA needs >= 2 fit samples per class for a covariance but class(es) "
                f"{', '.join(map(str, single[:10].tolist()))} have 1; add samples, drop those classes, "
                "or use the 'mahalanobis' scorer (shared covariance)"
            )
        d = x.shape[1]
        order = np.argsort(y, kind="stable")
        bounds = np.cumsum(counts[classes])[:-1]
        means, chols, logdets, jitters = [], [], [], []
        scales = []
        covs = []
        for xc in np.split(x[order], bounds):
            mu = xc.mean(axis=0)
            xc = xc - mu
            cov = xc.T @ xc / (xc.shape[0] - 1)
            covs.append(0.5 * (cov + cov.T))
            means.append(mu)
            scales.append(np.mean(np.diag(cov)))
        fallback_scale = float(np.mean(scales))
        for c, cov, scale in zip(classes, covs, scales, strict=True):
            chol, used = self._cholesky(cov, scale if scale > 0 else fallback_scale, int(c))
            chols.append(chol)
            jitters.append(used)
            logdets.append(2.0 * np.sum(np.log(np.diag(chol))))
        self.classes_ = classes
        self.means_ = np.stack(means)
        self.chol_ = chols
        self.logdet_ = np.array(logdets)
        self.jitter_ = np.array(jitters)
        self._const = d * math.log(2.0 * math.pi)

    def _cholesky(self, cov: np.ndarray, scale: float, c: int) -> tuple[np.ndarray, float]:
        if not scale > 0:
            raise ScoringError(
                f"all fit features are identical (zero covariance), class {c} cannot be modelled; "
                "check the features of this layer"
            )
        eye = np.eye(cov.shape[0])
        n_steps = max(0, math.floor(-math.log10(self.jitter) + 1e-9)) + 1  # jitter * 10^k <= 1
        tries = [0.0] + [self.jitter * 10.0**k * scale for k in range(n_steps)]
        with single_blas_thread():
            for jit in tries:
                try:
                    chol = scipy.linalg.cholesky(
                        cov + jit * eye if jit else cov, lower=True, check_finite=False
                    )
                except np.linalg.LinAlgError:
                    continue
                diag = np.diag(chol)
                if np.all(np.isfinite(chol)) and np.all(diag > 0):
                    return chol, jit
        raise ScoringError(
            f"the covariance of class {c} stays singular even with a jitter of its mean variance; "
            "the features of this class are degenerate - use the 'mahalanobis' scorer"
        )

    def _score_batch(self, x):
        logp = np.empty((x.shape[0], len(self.chol_)))
        centered = np.empty_like(x)
        for k, (mu, chol) in enumerate(zip(self.means_, self.chol_, strict=True)):
            np.subtract(x, mu, out=centered)
            # solve L y = (z - mu)^T for all rows at once (in place): ||y||^2 is the quadratic form
            y = dtrsm(1.0, chol, centered.T, lower=1, overwrite_b=1)
            logp[:, k] = np.einsum("ij,ij->j", y, y)
        logp += self.logdet_ + self._const
        logp *= -0.5
        top = logp.max(axis=1)
        return np.log(np.exp(logp - top[:, None]).sum(axis=1)) + top
