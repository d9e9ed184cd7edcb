"""The join that ncprobe exists for: per-layer NC statistics and per-layer OOD scores, from cached features.

Everything here works on :class:`~ncprobe.features.FeatureSet` objects (one per dataset), so each
dataset is run through the network once and every statistic and scorer reads the same arrays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import NcprobeError
from .features.probe_points import LOGITS, PENULTIMATE
from .stats.accumulator import ClassStats
from .stats.collapse import collapse_metrics

NC_COLUMNS = ["nc1", "nc2_equinorm", "nc2_equiangular", "nc2_etf", "nc3", "nc4", "ncc_acc", "tr_ratio", "cdnv"]
DEFAULT_SCORERS = ("msp", "maxlogit", "energy", "gen", "mahalanobis", "rmds", "gda", "knn", "vim", "neco",
                   "featnorm", "ncc", "probe_energy")


def parse_scorers(scorers) -> list[str]:
    """``None`` -> the default set; a comma-separated string or list -> validated names."""
    from .scores import get_scorer, list_scorers  # the scorer modules are only needed when scoring

    if scorers is None or scorers == "" or scorers == "all":
        return list(DEFAULT_SCORERS)
    if isinstance(scorers, str):
        scorers = [scorers]
    names = [s.strip() for item in scorers for s in str(item).split(",") if s.strip()]
    known = set(list_scorers())
    for name in names:
        if name not in known:
            get_scorer(name)  # raises the registry's one-line error with the list of choices
    return names


def check_labels(fs, num_classes: int, role: str) -> None:
    """A fit/evaluation set (features or source) must be non-empty, labelled, within the head's classes."""
    labels = np.asarray(fs.labels)
    if len(labels) == 0:
        raise NcprobeError(f"the {role} set {fs.name!r} is empty; check its path and options")
    if (labels < 0).any():
        raise NcprobeError(f"the {role} set {fs.name!r} has no labels; give a labelled set (class sub-folders, an npz with y)")
    if labels.max() >= num_classes:
        raise NcprobeError(
            f"the {role} set {fs.name!r} has label {int(labels.max())} but the checkpoint has {num_classes} classes; "
            f"use the dataset the model was trained on (or select classes with @classes=...)"
        )


def check_class_sizes(labels, scorers: list[str], role: str = "fit") -> None:
    """Fail before any forward pass when a per-class scorer cannot fit: GDA needs 2+ samples a class."""
    counts = np.bincount(np.asarray(labels)[np.asarray(labels) >= 0])
    single = np.flatnonzero(counts == 1)
    if "gda" in scorers and single.size:
        raise NcprobeError(
            f"the {role} set has a single sample of class(es) {', '.join(map(str, single[:10].tolist()))}, "
            f"too few for GDA's per-class covariance; add samples, select classes with @classes=..., "
            f"or leave gda out of --scorers"
        )


def stat_layers(fs) -> list[str]:
    """Layers whose collapse is measured: every probe point but the logits (the logits alone when
    nothing else could be hooked, e.g. a TorchScript model)."""
    return [layer for layer in fs.layers if layer != LOGITS] or [LOGITS]


def layer_stats(fit_fs, num_classes: int) -> dict[str, ClassStats]:
    """Streaming float64 class statistics of the fit set at each of :func:`stat_layers`."""
    return {layer: ClassStats.from_features(fit_fs[layer], fit_fs.labels, num_classes) for layer in stat_layers(fit_fs)}


def collapse_frame(fit_fs, stats: dict, head) -> pd.DataFrame:
    """One row per probed layer: dim, n, classes and the NC metrics (NC3/NC4 at the classifier input only)."""
    rows = []
    for index, layer in enumerate(fit_fs.layers):
        if layer not in stats:
            continue
        st = stats[layer]
        m = collapse_metrics(st, fit_fs[layer], fit_fs.labels, head=head if layer == PENULTIMATE else None)
        rows.append({"layer": layer, "layer_index": index, "dim": fit_fs.dim(layer), "n": int(st.n),
                     "classes": int((st.counts > 0).sum()), **{k: m.get(k) for k in NC_COLUMNS}})
    return pd.DataFrame(rows)


def ood_frame(fit_fs, id_fs, ood_sets: list, stats: dict, head, scorers: list[str], params: dict | None = None,
              progress: bool = False) -> pd.DataFrame:
    """One row per (layer, scorer, OOD set) with AUROC, AUPR-In/Out and both FPR@95 conventions."""
    from .metrics import ood_metrics
    from .scores import get_scorer

    params = params or {}
    jobs = []
    for index, layer in enumerate(fit_fs.layers):
        for name in scorers:
            scorer = get_scorer(name, **params.get(name, {}))
            if (scorer.input == "logits") != (layer == LOGITS):
                continue
            if scorer.needs_head and (layer != PENULTIMATE or head is None):
                continue
            jobs.append((index, layer, name, scorer))
    rows = []
    bar = _bar(len(jobs), "scoring", progress)
    for index, layer, name, scorer in jobs:
        scorer.fit(fit_fs[layer], fit_fs.labels, head=head, stats=stats.get(layer))
        id_scores = scorer.score(id_fs[layer])
        for ood_fs in ood_sets:
            m = ood_metrics(id_scores, scorer.score(ood_fs[layer]))
            rows.append({"ood": ood_fs.name, "layer": layer, "layer_index": index, "dim": fit_fs.dim(layer),
                         "scorer": name, **m, "n_ood": len(ood_fs)})
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def accuracy(fs, num_classes: int) -> float:
    labels = fs.labels
    if len(labels) == 0 or (labels < 0).any() or labels.max() >= num_classes:
        return float("nan")
    return float((fs[LOGITS].argmax(1) == labels).mean())


def _bar(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, rest): ``fraction`` of each class goes to fit, chosen with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise NcprobeError(f"--fit-split must be between 0 and 1 (exclusive), got {fraction}")
    rng = np.random.default_rng(seed)
    fit, rest = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else len(idx)
        fit.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(rest))
