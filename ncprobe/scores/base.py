"""The :class:`Scorer` base class and the input checks every scorer shares.

A scorer is sklearn-shaped: hyper-parameters are keyword arguments of ``__init__`` stored under the
same names (shown by ``repr`` and ``get_params``), ``fit`` learns from the ID fit set and returns
``self``, ``score`` returns one float64 per row, HIGHER = MORE IN-DISTRIBUTION.

Checks (each a one-line :class:`~ncprobe.errors.ScoringError`, from :mod:`ncprobe.validation`): empty fit or score input, rows with
NaN/inf (the message says how many), wrong width, labels not matching the rows, a missing head for
scorers that need one, scoring before fitting. ``score`` works through the input in batches (by
default as many rows as make ~2M values, at least 256: 8192 rows at d = 256, 1024 at d = 2048), so
memory stays bounded on large OOD sets, and refuses to return a non-finite score.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import ScoringError
from ..stats.accumulator import ClassStats
from ..validation import (
    as_numpy,
    check_class_labels,
    check_head,
    check_matrix,
    count_nonfinite_rows,
)

__all__ = ["Scorer", "check_matrix", "check_labels", "check_head", "params_string"]


def check_labels(labels, n: int) -> np.ndarray:
    """Integer labels, one per fit row, non-negative."""
    if labels is None:
        raise ScoringError("this scorer needs the class labels of the fit features; pass labels=")
    return check_class_labels(labels, n)


class Scorer:
    """Base class: subclass, set ``name``/``input``/``needs_head``/``needs_labels``, implement
    ``_fit`` and ``_score_batch``, decorate with :func:`~ncprobe.scores.register_scorer`."""

    name: str = ""
    input: str = "features"  # "features" | "logits"
    needs_head: bool = False
    needs_labels: bool = False
    #: in the default ``--scorers`` set (the registry lists the defaults from this flag)
    default: bool = False
    #: fewest fit samples a class needs (GDA: 2, for a covariance); checked before any forward pass
    min_per_class: int = 1
    #: the paper, as "Authors, Venue Year" (the README's scorer table is generated from it)
    paper: str = ""
    #: tunable hyper-parameters and the grid each is searched over on a validation OOD set
    grid: dict = {}
    #: parameters that choose how, not what, is computed (left out of the ``params`` column)
    execution_params: tuple = ()
    #: parameter -> fitted attribute holding its resolved value (e.g. ViM's dim=None -> dim_principal_)
    resolved_params: dict = {}
    #: parameters left out of the ``params`` column and the README's defaults while they do not change
    #: the result (knn's exact search on the whole fit set, gda without a dimension cap); once fitted,
    #: ``_extra_params`` adds the ones that did (e.g. ``fit_fraction=0.01,seed=0``)
    optional_params: tuple = ()
    #: True: fit reads float32/float64 rows as given, without a full ``_dtype`` copy of the fit matrix
    #: (the scorer converts one block at a time: O(block) instead of O(N d) extra memory)
    _fit_in_blocks: bool = False
    #: rows scored per batch; None: about ``batch_values`` values per batch (bounded memory)
    batch_size: int | None = None
    batch_values: int = 1 << 21
    #: dtype the fit rows and the scored rows are converted to (float64 unless the scorer needs less)
    _dtype = np.float64

    def __init__(self):
        self._fitted = False
        self.dim_: int | None = None

    # -------------------------------------------------------------- sklearn-ish
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict:
        """Hyper-parameters by name (the ``__init__`` keyword arguments)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def effective_params(self) -> dict:
        """The hyper-parameters that decide the scores, with defaults resolved once fitted."""
        out = {}
        for key, value in self.get_params().items():
            if key in self.execution_params or key in self.optional_params:
                continue
            attr = self.resolved_params.get(key)
            out[key] = getattr(self, attr, value) if (attr and self._fitted) else value
        if self._fitted:
            out.update(self._extra_params())
        return out

    def _extra_params(self) -> dict:
        """The ``optional_params`` (resolved) that changed this fit's result; {} by default."""
        return {}

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                           if not (k in self.optional_params and v == defaults.get(k)))
        return f"{type(self).__name__}({params})"

    # -------------------------------------------------------------- fit / score
    def fit(self, features=None, labels=None, head=None, stats: ClassStats | None = None):
        """Learn from the ID fit set (features or logits per ``input``); returns self."""
        self._fit_checked(features, labels, head, stats)
        self._fitted = True
        return self

    def _fit_checked(self, features, labels, head, stats) -> None:
        x = None
        if features is not None or stats is None or not self._can_use_stats():
            dtype = self._dtype
            if self._fit_in_blocks and getattr(features, "dtype", None) in (np.float32, np.float64):
                dtype = None  # keep the rows as they are (e.g. a float32 memmap); converted per block
            elif dtype is not None and hasattr(features, "shape") and len(features.shape) == 2:
                self._check_fit_copy(features, dtype)
            x = check_matrix(features, f"fit {self.input}", dtype=dtype)
        y = None
        if (
            self.needs_labels
            and x is not None
            and not (stats is not None and self._can_use_stats())
        ):
            y = check_labels(labels, x.shape[0])
        dim = x.shape[1] if x is not None else stats.dim
        h = check_head(head, dim) if self.needs_head else None
        if stats is not None and not isinstance(stats, ClassStats):
            raise ScoringError(
                "stats must be a ncprobe.stats.ClassStats; build it with ClassStats.from_features"
            )
        if stats is not None and stats.dim != dim:
            raise ScoringError(
                f"stats have dim {stats.dim} but the fit features have width {dim}; use one layer"
            )
        self.dim_ = dim
        self._fit(x, y, h, stats)

    def _check_fit_copy(self, features, dtype) -> None:
        """Before a scorer that reads the whole fit matrix makes its ``dtype`` copy: refuse (one line)
        when that copy alone exceeds the memory budget, instead of running out of memory later."""
        from ..budget import check_memory

        rows, cols = int(features.shape[0]), int(features.shape[1])
        same = isinstance(features, np.ndarray) and not isinstance(features, np.memmap) and features.dtype == dtype
        if same:
            return  # no copy is made
        check_memory(rows * cols * np.dtype(dtype).itemsize, f"{self.name}'s fit ({rows} x {cols} {np.dtype(dtype).name})",
                     "scorers that fit from class statistics (mahalanobis, rmds, ncc) or from the logits need no "
                     "such copy; score a narrower layer or a subsample of the fit set (@n=...)", error=ScoringError)

    def _can_use_stats(self) -> bool:
        """True where ``_fit`` can work from ``stats`` alone (then features may be None)."""
        return False

    def _fit(self, x, y, head, stats) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def score(self, x) -> np.ndarray:
        """Scores of the rows of ``x`` (float64, HIGHER = MORE IN-DISTRIBUTION), in batches."""
        if not self._fitted:
            raise ScoringError(
                f"scorer {self.name!r} is not fitted; call .fit(...) before .score(...)"
            )
        if x is None:
            raise ScoringError(f"no {self.input} to score; pass an (n, d) array")
        src = x if hasattr(x, "shape") else as_numpy(x)
        if len(src.shape) == 1 and self.dim_ is not None and src.shape[0] == self.dim_:
            src = src[None, :]
        if len(src.shape) != 2:
            raise ScoringError(
                f"{self.input} to score must be 2-D (samples, dim), got shape {tuple(src.shape)}"
            )
        n = src.shape[0]
        if n == 0:
            raise ScoringError(
                f"the {self.input} to score are empty (0 rows); pass at least one sample"
            )
        if self.dim_ is not None and src.shape[1] != self.dim_:
            raise ScoringError(
                f"{self.input} to score have width {src.shape[1]} but {self.name!r} was fitted on "
                f"width {self.dim_}; score the same layer it was fitted on"
            )
        out = np.empty(n, dtype=np.float64)
        bad = 0
        rows = self.batch_size or max(256, self.batch_values // max(1, src.shape[1]))
        for s in range(0, n, rows):
            xb = as_numpy(src[s : s + rows], self._dtype)
            nb = count_nonfinite_rows(xb)
            if nb or bad:
                bad += nb
                continue  # keep counting, stop scoring
            # overflow shows up as a non-finite score, reported below as a ScoringError
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                out[s : s + len(xb)] = self._score_batch(xb)
        if bad:
            raise ScoringError(
                f"{bad} of {n} rows of the {self.input} to score contain NaN or inf; drop or fix those rows first"
            )
        nonfinite = int(np.count_nonzero(~np.isfinite(out)))
        if nonfinite:
            raise ScoringError(
                f"scorer {self.name!r} produced {nonfinite} non-finite scores of {n}; the features are "
                "too extreme for it (overflow) - try another scorer or standardize the features"
            )
        return out

    def _score_batch(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


def params_string(params: dict) -> str:
    """``{"k": 50, "T": 1.0}`` -> ``"k=50,T=1"``: the compact form of the ``params`` column."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, (list, tuple)):
            return "/".join(fmt(x) for x in v)
        return str(v)

    return ",".join(f"{k}={fmt(v)}" for k, v in params.items())
