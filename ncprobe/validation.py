"""The input checks shared by the statistics, the scorers and the metrics.

Each check raises a one-line :class:`~ncprobe.errors.ScoringError` that names what is wrong and
how to fix it; ``what`` in the messages is the caller's name for the input ("fit features", "ID
scores", ...). Finite checks first sum the array: a finite total proves every value finite, so the
common case costs one pass and no temporary boolean array.
"""

from __future__ import annotations

import numpy as np

from .errors import ScoringError

__all__ = [
    "as_numpy",
    "check_class_labels",
    "check_finite_rows",
    "check_head",
    "check_matrix",
    "check_scores",
    "count_nonfinite_rows",
]


def as_numpy(a, dtype=None) -> np.ndarray:
    """``a`` (numpy array, torch tensor, list) as a numpy array, without copying when possible."""
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def count_nonfinite_rows(a: np.ndarray) -> int:
    """Number of rows of the 2-D array ``a`` holding NaN or +-inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(a.sum()):
            return 0
    return int(a.shape[0] - np.count_nonzero(np.isfinite(a).all(axis=1)))


def check_finite_rows(a: np.ndarray, what: str, fix: str = "drop or fix those rows first") -> None:
    """ScoringError ``'<k> of <n> rows of the <what> contain NaN or inf; <fix>'`` when any row is not finite."""
    bad = count_nonfinite_rows(a)
    if bad:
        raise ScoringError(f"{bad} of {a.shape[0]} {what} contain NaN or inf; {fix}")


def check_matrix(x, what: str, dim: int | None = None, dtype=np.float64) -> np.ndarray:
    """``x`` as a finite, non-empty 2-D ``dtype`` array (of width ``dim`` when given)."""
    if x is None:
        raise ScoringError(f"{what} are missing; pass an (n, d) array")
    a = as_numpy(x, dtype)
    if a.ndim == 1 and dim is not None and a.size == dim:
        a = a[None, :]
    if a.ndim != 2:
        raise ScoringError(f"{what} must be a 2-D (samples, dim) array, got shape {a.shape}; pool or flatten them")
    if a.shape[0] == 0:
        raise ScoringError(f"{what} are empty (0 rows); pass at least one sample")
    if dim is not None and a.shape[1] != dim:
        raise ScoringError(f"{what} have width {a.shape[1]} but the scorer was fitted on width {dim}; use the same layer")
    check_finite_rows(a, f"rows of the {what}")
    return a


def check_class_labels(labels, n: int, num_classes: int | None = None, *, integer_hint: str = "pass 0..C-1",
                       range_hint: str = "drop OOD/unlabelled rows or raise num_classes") -> np.ndarray:
    """``labels`` as int64 class indices, one per row of an ``n``-row input, >= 0 (and < ``num_classes``)."""
    y = as_numpy(labels)
    if y.shape != (n,):
        raise ScoringError(f"got {n} feature rows but labels of shape {tuple(y.shape)}; pass one label per row")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ScoringError(f"labels must be integer class indices; {integer_hint}")
    y = y.astype(np.int64, copy=False)
    if not y.size:
        return y
    if num_classes is None:
        if y.min() < 0:
            raise ScoringError("labels must be >= 0; drop OOD/unlabelled rows (label < 0) from the fit set")
    elif y.min() < 0 or y.max() >= num_classes:
        raise ScoringError(
            f"labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}; {range_hint}"
        )
    return y


def check_head(head, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (C, d), b (C,)) of a linear classifier as finite float64 arrays; b None means zeros."""
    if head is None:
        raise ScoringError("this scorer needs the classifier head (W, b); pass head=(W, b) of the layer's classifier")
    try:
        w, b = head
    except (TypeError, ValueError):
        raise ScoringError("head must be a pair (W (C, d), b (C,)); pass head=(W, b)") from None
    w = as_numpy(w, np.float64)
    b = np.zeros(w.shape[0]) if b is None else as_numpy(b, np.float64)
    if w.ndim != 2 or w.shape[1] != dim or b.shape != (w.shape[0],):
        raise ScoringError(
            f"head shapes W {w.shape}, b {b.shape} do not fit features of width {dim}; "
            "pass the classifier whose input is this layer"
        )
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ScoringError("the head (W, b) contains NaN or inf; check the checkpoint")
    return w, b


def check_scores(scores, which: str) -> np.ndarray:
    """One finite float64 score per sample, as a non-empty 1-D array."""
    s = as_numpy(scores, np.float64)
    if s.ndim > 1 and s.size == max(s.shape):
        s = s.reshape(-1)
    if s.ndim != 1:
        raise ScoringError(f"{which} scores must be a 1-D array, got shape {s.shape}; pass one score per sample")
    if s.size == 0:
        raise ScoringError(f"the {which} score set is empty; pass at least one {which} sample")
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise ScoringError(f"{bad} of {s.size} {which} scores are NaN or inf; fix the features/scorer that produced them")
    return s
