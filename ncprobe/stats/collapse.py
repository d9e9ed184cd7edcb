"""Neural-collapse metrics from :class:`~ncprobe.stats.accumulator.ClassStats`.

Definitions follow Papyan, Han & Donoho (PNAS 2020) as written in papers.md section 4, with C the
number of *present* classes: classes with no sample in the statistics are excluded everywhere (their
means are undefined), and ``num_classes_used`` in the result says how many were used. mu_G is the
unweighted mean of the class means and M has rows mu_c - mu_G.

Cost: NC1 uses the C x C Gram matrix M M^T instead of a d x d eigendecomposition, so it costs
O(C^2 d + C d^2) instead of O(d^3). NCC accuracy and NC4 go through the features in chunks
(:func:`ncc_counts`), so they never hold more than ``batch_size`` rows of distances at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ScoringError
from ..validation import as_numpy, check_finite_rows
from ._threads import single_blas_thread
from .accumulator import ClassStats

__all__ = [
    "NC_COLUMNS",
    "NC_METRICS",
    "NCMetric",
    "collapse_metrics",
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_etf",
    "nc3",
    "tr_ratio",
    "cdnv",
    "ncc_counts",
    "nearest_class_mean",
]


def _centered(stats: ClassStats) -> np.ndarray:
    if stats.present.size < 2:
        raise ScoringError(
            f"neural-collapse metrics need at least 2 classes with samples, got {stats.present.size}; "
            "fit on features of several classes"
        )
    return stats.centered_means


def nc1(stats: ClassStats) -> float:
    """NC1, within-class variability collapse (Papyan et al. 2020).
    NC1 = Tr(Sigma_W Sigma_B^+) / C, Sigma_B^+ the pseudo-inverse over the top C-1 eigenvalues of Sigma_B."""
    m = _centered(stats)
    c = m.shape[0]
    # Sigma_B = M^T M / C shares its non-zero eigenvalues with G = M M^T / C (C x C):
    # G v = lam v  =>  u = M^T v / sqrt(C lam) is a unit eigenvector of Sigma_B with eigenvalue lam.
    gram = m @ m.T / c
    with single_blas_thread():
        lam, v = np.linalg.eigh(0.5 * (gram + gram.T))
    lam, v = lam[::-1][: c - 1], v[:, ::-1][:, : c - 1]
    # drop eigenvalues that are zero up to rounding (rank(M) < C-1, e.g. d < C-1), as pinv does
    keep = lam > lam[0] * max(c, m.shape[1]) * np.finfo(np.float64).eps if lam[0] > 0 else lam > 0
    if not keep.any():
        raise ScoringError(
            "all class means coincide, so NC1 is undefined; check the features/labels"
        )
    lam, v = lam[keep], v[:, keep]
    u = m.T @ v / np.sqrt(c * lam)  # (d, r) orthonormal eigenvectors of Sigma_B
    sw_u = stats.sigma_w @ u
    return float(np.einsum("ij,ij->j", u, sw_u) @ (1.0 / lam) / c)


def nc2_equinorm(stats: ClassStats) -> float:
    """NC2 equinorm, spread of class-mean norms (Papyan et al. 2020).
    std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G|| (sample std, ddof=1, as in the paper's code)."""
    norms = np.linalg.norm(_centered(stats), axis=1)
    return float(np.std(norms, ddof=1) / np.mean(norms))


def nc2_equiangular(stats: ClassStats) -> float:
    """NC2 equiangularity, distance of class-mean angles from the simplex (Papyan et al. 2020).
    mean over c != c' of |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|."""
    m = _centered(stats)
    c = m.shape[0]
    mn = m / np.linalg.norm(m, axis=1, keepdims=True)
    cos = mn @ mn.T
    off = ~np.eye(c, dtype=bool)
    return float(np.abs(cos[off] + 1.0 / (c - 1)).mean())


def nc2_etf(stats: ClassStats) -> float:
    """NC2 ETF distance of the class-mean Gram matrix (Papyan et al. 2020).
    || M M^T / ||M M^T||_F - (I - 11^T/C) / sqrt(C-1) ||_F."""
    m = _centered(stats)
    c = m.shape[0]
    g = m @ m.T
    etf = (np.eye(c) - np.full((c, c), 1.0 / c)) / np.sqrt(c - 1)
    return float(np.linalg.norm(g / np.linalg.norm(g) - etf))


def nc3(stats: ClassStats, weight) -> float:
    """NC3, self-duality of classifier and class means (Papyan et al. 2020).
    || W/||W||_F - M/||M||_F ||_F^2 with W (C, d) restricted to the present classes."""
    m = _centered(stats)
    w = as_numpy(weight, np.float64)
    if w.shape != (stats.num_classes, stats.dim):
        raise ScoringError(
            f"classifier weight has shape {tuple(w.shape)}, expected ({stats.num_classes}, {stats.dim}); "
            "NC3/NC4 need the head whose input is this layer"
        )
    w = w[stats.present]
    return float(np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2)


def tr_ratio(stats: ClassStats) -> float:
    """Trace ratio of within- to between-class covariance (a pseudo-inverse-free NC1 variant).
    Tr(Sigma_W) / Tr(Sigma_B)."""
    m = _centered(stats)
    tr_b = float(np.einsum("ij,ij->", m, m) / m.shape[0])
    return float(np.trace(stats.within_scatter) / stats.n / tr_b)


def cdnv(stats: ClassStats) -> float:
    """Class-distance normalized variance (Galanti, Gyorgy & Hutter 2022).
    mean over pairs c < c' of (var_c + var_c') / (2 ||mu_c - mu_c'||^2), var_c = mean ||h - mu_c||^2."""
    p = stats.present
    if p.size < 2:
        _centered(stats)
    mu = stats.means[p]
    var = stats.class_sq[p] / stats.counts[p]
    sq = np.einsum("ij,ij->i", mu, mu)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * mu @ mu.T, 0.0)
    iu = np.triu_indices(p.size, k=1)
    d2 = dist2[iu]
    # recompute the pairwise distances directly where the expansion could lose precision
    small = d2 < 1e-8 * (sq[iu[0]] + sq[iu[1]])
    if small.any():
        diff = mu[iu[0][small]] - mu[iu[1][small]]
        d2 = d2.copy()
        d2[small] = np.einsum("ij,ij->i", diff, diff)
    if np.any(d2 == 0):
        raise ScoringError(
            "two classes have identical means, so the CDNV is undefined; check the labels"
        )
    return float(np.mean((var[iu[0]] + var[iu[1]]) / (2.0 * d2)))


def nearest_class_mean(x, means: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Index (row of ``means``) of the nearest mean in Euclidean distance for each row of ``x``, in chunks."""
    means = np.asarray(means, np.float64)
    msq = np.einsum("ij,ij->i", means, means)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), batch_size):
        xb = as_numpy(x[s : s + batch_size], np.float64)
        # argmin ||x - mu||^2 = argmin (||mu||^2 - 2 x.mu)
        out[s : s + batch_size] = np.argmin(msq[None, :] - 2.0 * xb @ means.T, axis=1)
    return out


def ncc_counts(stats: ClassStats, features, labels, head=None, batch_size: int = 8192) -> dict:
    """Counts for NCC accuracy and NC4 over ``features`` processed ``batch_size`` rows at a time.

    Returns dict(n, ncc_correct, nc4_mismatch) (``nc4_mismatch`` None without ``head``); the
    counts of several calls can be summed, so features too large for memory can be streamed.
    """
    x = features if hasattr(features, "shape") else as_numpy(features)
    y = as_numpy(labels).astype(np.int64, copy=False)
    if len(x.shape) != 2 or x.shape[1] != stats.dim or y.shape != (x.shape[0],):
        raise ScoringError(
            f"features {tuple(x.shape)} / labels {tuple(y.shape)} do not match the statistics "
            f"(dim {stats.dim}); pass the same layer's features with one label per row"
        )
    present = stats.present
    means = stats.means[present]
    if head is not None:
        w = as_numpy(head[0], np.float64)
        b = as_numpy(head[1], np.float64)
        if w.shape != (stats.num_classes, stats.dim) or b.shape != (stats.num_classes,):
            raise ScoringError(
                f"head shapes W {tuple(w.shape)}, b {tuple(b.shape)} do not match "
                f"({stats.num_classes}, {stats.dim}); pass the classifier reading this layer"
            )
    correct = 0
    mismatch = 0
    for s in range(0, x.shape[0], batch_size):
        xb = as_numpy(x[s : s + batch_size], np.float64)
        check_finite_rows(xb, "feature rows")
        ncc = present[nearest_class_mean(xb, means, batch_size)]
        correct += int(np.sum(ncc == y[s : s + batch_size]))
        if head is not None:
            pred = np.argmax(xb @ w.T + b, axis=1)
            mismatch += int(np.sum(pred != ncc))
    return {
        "n": int(x.shape[0]),
        "ncc_correct": correct,
        "nc4_mismatch": mismatch if head is not None else None,
    }


@dataclass(frozen=True)
class NCMetric:
    """One entry of :data:`NC_METRICS`: how the metric is computed and what it needs.

    ``input`` is ``"stats"`` (``fn(stats)``), ``"head"`` (``fn(stats, W)``, the classifier weight) or
    ``"counts"`` (``fn(counts)`` from one nearest-class-centre pass over labelled features, see
    :func:`ncc_counts`; ``needs_head`` when the pass must also compare with the classifier).
    """

    fn: Callable
    input: str = "stats"
    needs_head: bool = False


#: Every NC metric by name, in the order of the collapse table's columns.
NC_METRICS: dict[str, NCMetric] = {
    "nc1": NCMetric(nc1),
    "nc2_equinorm": NCMetric(nc2_equinorm),
    "nc2_equiangular": NCMetric(nc2_equiangular),
    "nc2_etf": NCMetric(nc2_etf),
    "nc3": NCMetric(nc3, "head", needs_head=True),
    "nc4": NCMetric(lambda c: c["nc4_mismatch"] / c["n"], "counts", needs_head=True),
    "ncc_acc": NCMetric(lambda c: c["ncc_correct"] / c["n"], "counts"),
    "tr_ratio": NCMetric(tr_ratio),
    "cdnv": NCMetric(cdnv),
}
NC_COLUMNS: tuple[str, ...] = tuple(NC_METRICS)


def collapse_metrics(
    stats: ClassStats, features=None, labels=None, head=None, batch_size: int = 8192
) -> dict:
    """All NC metrics of one layer (:data:`NC_METRICS`), plus ``num_classes_used``.

    ``stats`` come from the fit features; ``features``/``labels`` (any labelled set, usually the
    same fit set) give ``ncc_acc`` and, with ``head = (W (C, d), b (C,))``, ``nc4``. ``nc3`` needs
    ``head`` only. Metrics that cannot be computed from what was passed are ``None``.
    """
    if not isinstance(stats, ClassStats):
        raise ScoringError(
            "collapse_metrics needs a ClassStats; build one with ClassStats.from_features"
        )
    _centered(stats)
    counts = None
    if features is not None:
        if labels is None:
            raise ScoringError("ncc_acc needs the labels of the features; pass labels=")
        counts = ncc_counts(stats, features, labels, head=head, batch_size=batch_size)
        if counts["n"] == 0:
            raise ScoringError("no feature rows were given for NCC accuracy; pass a non-empty set")
    out: dict = {}
    for name, metric in NC_METRICS.items():
        if metric.needs_head and head is None:
            out[name] = None
        elif metric.input == "stats":
            out[name] = metric.fn(stats)
        elif metric.input == "head":
            out[name] = metric.fn(stats, head[0])
        else:
            out[name] = None if counts is None else metric.fn(counts)
    out["num_classes_used"] = int(stats.present.size)
    return out
