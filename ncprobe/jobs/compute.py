"""Step 3: from cached features to tables. The join that ncprobe exists for: per-layer NC
statistics and per-layer OOD scores, computed from the same arrays of one forward pass.

Everything here works on :class:`~ncprobe.features.FeatureSet` objects (one per dataset) and returns
long-format DataFrames without run metadata; :func:`layers_tables` stamps the run onto them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

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


def ood_frame(fit_fs, id_fs, ood_sets: list, stats: dict, head, scorers: list[str], params: dict | None = None,
              progress: bool = False) -> pd.DataFrame:
    """One row per (layer, scorer, OOD set) with AUROC, AUPR-In/Out and both FPR@95 conventions."""
    from ..metrics import ood_metrics
    from ..scores.base import params_string

    jobs = scorer_jobs(fit_fs.layers, scorers, head, params)
    rows = []
    bar = progress_bar(len(jobs), "scoring", progress)
    for index, layer, name, scorer in jobs:
        scorer.fit(fit_fs[layer], fit_fs.labels, head=head, stats=stats.get(layer))
        id_scores = scorer.score(id_fs[layer])
        effective = params_string(scorer.effective_params())
        for ood_fs in ood_sets:
            m = ood_metrics(id_scores, scorer.score(ood_fs[layer]))
            rows.append({"ood": ood_fs.name, "layer": layer, "layer_index": index, "dim": fit_fs.dim(layer),
                         "scorer": name, "params": effective, "tuned_on": "", **m, "n_ood": len(ood_fs)})
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def accuracy(fs, num_classes: int) -> float:
    """Top-1 accuracy of the logits against the labels (NaN when the set is unlabelled or exceeds the head)."""
    labels = fs.labels
    if len(labels) == 0 or (labels < 0).any() or labels.max() >= num_classes:
        return float("nan")
    return float((fs[LOGITS].argmax(1) == labels).mean())


def collapse_table(fs, ckpt, run: RunInfo) -> pd.DataFrame:
    """The stamped collapse table of the labelled set ``fs``."""
    stats = layer_stats(fs, ckpt.num_classes)
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


def layers_tables(ckpt, feats: LayersFeatures, scorers: list[str], run: RunInfo, *, scorer_params=None,
                  transfer_fraction: float = 0.5, progress: bool = False) -> LayersTables:
    """Statistics, collapse, scores, transfer and correlation of one ``layers`` run."""
    from ..transfer import (  # scipy.stats and sklearn: only for this job
        correlation_frame,
        transfer_frame,
    )

    head = ckpt.head_weights()
    stats = layer_stats(feats.fit, ckpt.num_classes)
    collapse = stamp(collapse_frame(feats.fit, stats, head), run, COLLAPSE_COLUMNS, data=feats.fit.name)
    id_acc = accuracy(feats.id, ckpt.num_classes)
    ood = ood_frame(feats.fit, feats.id, feats.ood, stats, head, scorers, scorer_params, progress=progress)
    ood = stamp(ood, run, OOD_COLUMNS, id=feats.id.name, fit=feats.fit.name, id_accuracy=id_acc,
                n_fit=len(feats.fit), n_id=len(feats.id))
    transfer = pd.DataFrame(columns=TRANSFER_COLUMNS)
    if feats.transfer:
        parts = [transfer_frame(fs, fs.name, train_fraction=transfer_fraction, seed=run.seed) for fs in feats.transfer]
        transfer = stamp(pd.concat(parts, ignore_index=True), run, TRANSFER_COLUMNS)
    correlation = correlation_frame(collapse, ood, transfer)
    correlation = stamp(correlation, run, CORRELATION_COLUMNS) if not correlation.empty else correlation
    return LayersTables(run=run, ood=ood, collapse=collapse, transfer=transfer, correlation=correlation,
                        id_accuracy=id_acc)

