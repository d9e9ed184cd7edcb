"""Step 3: from cached features to tables. The join that ncprobe exists for: per-layer NC
statistics and per-layer OOD scores, computed from the same arrays of one forward pass.

Everything here works on :class:`~ncprobe.features.FeatureSet` objects (one per dataset) and returns
long-format DataFrames without run metadata; :func:`layers_tables` stamps the run onto them.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ScoringError
from ..features.featureset import FeatureSet
from ..features.probe_points import LOGITS, PENULTIMATE
from ..progress import progress_bar
from ..report.schema import (
    COLLAPSE_COLUMNS,
    CORRELATION_COLUMNS,
    OOD_COLUMNS,
    TRANSFER_COLUMNS,
    RunInfo,
    stamp,
)
from ..stats.accumulator import ClassStats
from ..stats.collapse import NC_COLUMNS, collapse_metrics
from .extract import LayersFeatures


def stat_layers(fs) -> list[str]:
    """Layers whose collapse is measured: every probe point but the logits (the logits alone when
    nothing else could be hooked, e.g. a TorchScript model)."""
    return [layer for layer in fs.layers if layer != LOGITS] or [LOGITS]


def layer_stats(fit_fs, num_classes: int) -> dict[str, ClassStats]:
    """Streaming float64 class statistics of the fit set at each of :func:`stat_layers`."""
    return {layer: ClassStats.from_features(fit_fs[layer], fit_fs.labels, num_classes) for layer in stat_layers(fit_fs)}


def merged_or_layer_stats(fit_fs, num_classes: int) -> dict[str, ClassStats]:
    """The class statistics merged across distributed ranks when the extraction gathered them
    (``fit_fs.meta['class_stats']``), else :func:`layer_stats` of the features."""
    merged = fit_fs.meta.get("class_stats")
    if merged:
        return {layer: merged[layer] for layer in stat_layers(fit_fs) if layer in merged}
    return layer_stats(fit_fs, num_classes)


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


def scorer_jobs(layers: list[str], scorers: list[str], head, params: dict | None = None) -> list[tuple]:
    """(layer index, layer, name, unfitted scorer) for every scorer at every layer where it applies:
    logit scorers on the logits, head-reading scorers at the classifier input, the rest elsewhere."""
    from ..scores import get_scorer

    params = params or {}
    jobs = []
    for index, layer in enumerate(layers):
        for name in scorers:
            scorer = get_scorer(name, **params.get(name, {}))
            if (scorer.input == "logits") != (layer == LOGITS):
                continue
            if scorer.needs_head and (layer != PENULTIMATE or head is None):
                continue
            jobs.append((index, layer, name, scorer))
    return jobs


def _fit_rows(scorer, fit_fs, layer: str, stats: dict):
    """The fit rows a scorer is given: none when it fits from the layer's class statistics alone
    (Mahalanobis, RMDS, NCC), so that a fit set larger than memory is never read whole for them."""
    if stats.get(layer) is not None and scorer._can_use_stats():
        return None
    return fit_fs[layer]


def tune_scorer(name: str, layer: str, fit_fs, id_fs, val_sets: list, stats: dict, head, fixed: dict):
    """The scorer ``name`` at ``layer`` with its grid's best hyper-parameters, chosen by mean AUROC of
    the ID set against the validation OOD sets only (OpenOOD v1.5's protocol); parameters the user
    fixed are not searched. Grid points that cannot fit this layer (e.g. a dimension above its
    width) are skipped; ties keep the first point of the grid. None when there is nothing to tune."""
    from ..errors import ScoringError
    from ..metrics import auroc
    from ..scores import get_scorer, scorer_class
    from ..scores.base import params_string

    grid = {k: tuple(v) for k, v in scorer_class(name).grid.items() if k not in fixed}
    if not val_sets or not grid:
        return None
    best, seen = None, set()
    for combo in itertools.product(*grid.values()):
        scorer = get_scorer(name, **fixed, **dict(zip(grid, combo, strict=True)))
        try:
            with warnings.catch_warnings():  # e.g. k above the fit size: clipped, then skipped as a repeat
                warnings.simplefilter("ignore")
                scorer.fit(_fit_rows(scorer, fit_fs, layer, stats), fit_fs.labels, head=head, stats=stats.get(layer))
            effective = params_string(scorer.effective_params())
            if effective in seen:
                continue
            seen.add(effective)
            id_scores = scorer.score(id_fs[layer])
            value = float(np.mean([auroc(id_scores, scorer.score(v[layer])) for v in val_sets]))
        except ScoringError:
            continue
        if best is None or value > best[0]:
            best = (value, scorer)
    return None if best is None else best[1]


def ood_frame(fit_fs, id_fs, ood_sets: list, stats: dict, head, scorers: list[str], params: dict | None = None,
              progress: bool = False, val_sets: list | None = None, collect: dict | None = None,
              ood_groups: dict | None = None) -> pd.DataFrame:
    """One row per (layer, scorer, OOD set) with AUROC, AUPR-In/Out and both FPR@95 conventions.

    ``val_sets``: validation OOD feature sets on which each tunable scorer's grid is searched first
    (:func:`tune_scorer`); ``collect``: a dict that receives every score vector, keyed
    ``(set name, layer, scorer)``.
    """
    from ..metrics import ood_metrics
    from ..scores.base import params_string

    params = params or {}
    jobs = scorer_jobs(fit_fs.layers, scorers, head, params)
    tuned_on = ",".join(v.name for v in val_sets or [])
    rows = []
    bar = progress_bar(len(jobs), "scoring", progress)
    for index, layer, name, scorer in jobs:
        tuned = tune_scorer(name, layer, fit_fs, id_fs, val_sets or [], stats, head, params.get(name, {}))
        if tuned is not None:
            scorer = tuned
        else:
            scorer.fit(_fit_rows(scorer, fit_fs, layer, stats), fit_fs.labels, head=head, stats=stats.get(layer))
        id_scores = scorer.score(id_fs[layer])
        effective = params_string(scorer.effective_params())
        if collect is not None:
            collect[(id_fs.name, layer, name)] = id_scores
        for ood_fs in ood_sets:
            ood_scores = scorer.score(ood_fs[layer])
            if collect is not None:
                collect[(ood_fs.name, layer, name)] = ood_scores
            m = ood_metrics(id_scores, ood_scores)
            rows.append({"ood": ood_fs.name, "ood_group": (ood_groups or {}).get(ood_fs.name, ""), "layer": layer, "layer_index": index, "dim": fit_fs.dim(layer),
                         "scorer": name, "params": effective, "tuned_on": tuned_on if tuned is not None else "",
                         **m, "n_ood": len(ood_fs)})
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def scores_frame(collect: dict, id_fs, ood_sets: list) -> pd.DataFrame:
    """Per-sample scores, wide: one row per sample of the ID set then of each OOD set (``set``,
    ``index`` in its source, ``label``, -1 where unknown), one float64 column per ``layer/scorer``."""
    sets = [id_fs, *ood_sets]
    columns = list(dict.fromkeys((layer, scorer) for (_, layer, scorer) in collect))
    table = pd.DataFrame({
        "set": np.concatenate([np.full(len(fs), fs.name, dtype=object) for fs in sets]),
        "index": np.concatenate([fs.sample_index() for fs in sets]).astype(np.int64),
        "label": np.concatenate([fs.labels for fs in sets]).astype(np.int64),
    })
    for layer, scorer in columns:
        table[f"{layer}/{scorer}"] = np.concatenate([collect[(fs.name, layer, scorer)] for fs in sets])
    return table


def accuracy(fs, num_classes: int) -> float:
    """Top-1 accuracy of the logits against the labels (NaN when the set is unlabelled or exceeds the head)."""
    labels = fs.labels
    logits = fs[LOGITS]
    bad = int(logits.shape[0] - np.count_nonzero(np.isfinite(logits).all(axis=1)))
    if bad:
        raise ScoringError(
            f"{bad} of {logits.shape[0]} rows of the logits on {fs.name!r} are NaN or inf; the checkpoint's weights "
            "or the input normalization (--mean/--std) produce non-finite outputs"
        )
    if len(labels) == 0 or (labels < 0).any() or labels.max() >= num_classes:
        return float("nan")
    return float((logits.argmax(1) == labels).mean())


def collapse_table(fs, ckpt, run: RunInfo) -> pd.DataFrame:
    """The stamped collapse table of the labelled set ``fs``."""
    stats = merged_or_layer_stats(fs, ckpt.num_classes)
    return stamp(collapse_frame(fs, stats, ckpt.head_weights()), run, COLLAPSE_COLUMNS, data=fs.name)


@dataclass
class LayersTables:
    """The tables of one ``layers`` run, stamped with its metadata."""

    run: RunInfo
    ood: pd.DataFrame
    collapse: pd.DataFrame
    transfer: pd.DataFrame
    correlation: pd.DataFrame
    id_accuracy: float
    scores: pd.DataFrame | None = None


def layers_tables(ckpt, feats: LayersFeatures, scorers: list[str], run: RunInfo, *, scorer_params=None,
                  transfer_fraction: float = 0.5, progress: bool = False, keep_scores: bool = False,
                  ood_groups: dict | None = None) -> LayersTables:
    """Statistics, collapse, scores, transfer and correlation of one ``layers`` run. With
    covariate-shifted ID sets (``feats.csid``, full-spectrum detection) the ID side of every score
    is the ID set followed by them; accuracy is the ID set's alone."""
    from ..transfer import (  # scipy.stats and sklearn: only for this job
        correlation_frame,
        transfer_frame,
    )

    head = ckpt.head_weights()
    stats = merged_or_layer_stats(feats.fit, ckpt.num_classes)
    collapse = stamp(collapse_frame(feats.fit, stats, head), run, COLLAPSE_COLUMNS, data=feats.fit.name)
    id_acc = accuracy(feats.id, ckpt.num_classes)
    collect = {} if keep_scores else None
    id_side = FeatureSet.concat([feats.id, *feats.csid]) if feats.csid else feats.id
    ood = ood_frame(feats.fit, id_side, feats.ood, stats, head, scorers, scorer_params, progress=progress,
                    val_sets=feats.val, collect=collect, ood_groups=ood_groups)
    ood = stamp(ood, run, OOD_COLUMNS, id=id_side.name, fit=feats.fit.name, id_accuracy=id_acc,
                n_fit=len(feats.fit), n_id=len(id_side))
    transfer = pd.DataFrame(columns=TRANSFER_COLUMNS)
    if feats.transfer:
        parts = [transfer_frame(fs, fs.name, train_fraction=transfer_fraction, seed=run.seed) for fs in feats.transfer]
        transfer = stamp(pd.concat(parts, ignore_index=True), run, TRANSFER_COLUMNS)
    correlation = correlation_frame(collapse, ood, transfer)
    correlation = stamp(correlation, run, CORRELATION_COLUMNS) if not correlation.empty else correlation
    scores = scores_frame(collect, id_side, feats.ood) if keep_scores else None
    return LayersTables(run=run, ood=ood, collapse=collapse, transfer=transfer, correlation=correlation,
                        id_accuracy=id_acc, scores=scores)

