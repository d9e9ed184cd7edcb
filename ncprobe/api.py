"""The Python API, for notebooks and scripts: the same jobs as the CLI, returning pandas DataFrames.

Each job is the same four steps (:mod:`ncprobe.jobs`): resolve the inputs and check them before any
forward pass, extract features (once per set, cached), compute the tables, write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .checkpoint.loaded import LoadedCheckpoint
from .jobs.calibrate import calibrate
from .jobs.compute import accuracy, collapse_table, layers_tables
from .jobs.extract import FeatureExtractor, extract_layers_features
from .jobs.inputs import (
    check_labelled,
    resolve_checkpoint,
    resolve_layers_inputs,
    resolve_source,
)
from .jobs.write import check_out, write_layers_plot, write_scores, write_tables
from .report.schema import (
    COLLAPSE_COLUMNS,
    CORRELATION_COLUMNS,
    OOD_COLUMNS,
    TRANSFER_COLUMNS,
    RunInfo,
)

__all__ = ["COLLAPSE_COLUMNS", "CORRELATION_COLUMNS", "OOD_COLUMNS", "TRANSFER_COLUMNS", "LayersResult",
           "collapse", "evaluate", "layers"]


@dataclass
class LayersResult:
    """What one ``layers`` (or ``collapse``) run produced: long-format tables plus where they were written."""

    run_id: str
    checkpoint: LoadedCheckpoint
    ood: pd.DataFrame
    collapse: pd.DataFrame
    id_accuracy: float
    from_cache: dict = field(default_factory=dict)
    transfer: pd.DataFrame | None = None
    correlation: pd.DataFrame | None = None
    out: Path | None = None
    plot_path: Path | None = None
    extras: dict = field(default_factory=dict)
    #: per-sample scores (with save_scores): set, index, label and one column per layer/scorer
    scores: pd.DataFrame | None = None
    scores_path: Path | None = None
    #: one-line notes of the run (e.g. the calibrated normalization)
    notes: list = field(default_factory=list)


def _calibrated(ckpt, source, device, batch_size, report, cache_dir, use_cache) -> list[str]:
    note = calibrate(ckpt, source, device=device, batch_size=batch_size, cache_dir=cache_dir, use_cache=use_cache)
    if note and report is not None:
        report(note)
    return [note] if note else []


def _extractor(ckpt, layers, device, batch_size, cache_dir, use_cache, progress) -> FeatureExtractor:
    return FeatureExtractor(ckpt, layers=layers, device=device, batch_size=batch_size, cache_dir=cache_dir,
                            use_cache=use_cache, progress=progress)


def evaluate(checkpoint, data, *, device=None, batch_size=256, cache_dir=None, use_cache=True, progress=True,
             data_root=None, download=False, checkpoint_options=None, report=None) -> float:
    """Top-1 accuracy of ``checkpoint`` on the labelled set ``data``. ``report(line)`` receives the
    run's notes (the calibrated normalization when nothing said it)."""
    ckpt = resolve_checkpoint(checkpoint, checkpoint_options)
    source = resolve_source(data, data_root=data_root, download=download)
    check_labelled(source, ckpt.num_classes, "evaluation")
    _calibrated(ckpt, source, device, batch_size, report, cache_dir, use_cache)
    fs = _extractor(ckpt, [], device, batch_size, cache_dir, use_cache, progress)(source)
    return accuracy(fs, ckpt.num_classes)


def collapse(checkpoint, data, *, layers=None, out=None, device=None, batch_size=256, cache_dir=None,
             use_cache=True, progress=True, data_root=None, download=False, checkpoint_options=None,
             group=None, report=None) -> LayersResult:
    """Per-layer NC statistics of ``checkpoint`` on the labelled set ``data`` (written to ``out/collapse.csv``)."""
    if out is not None:
        check_out(out, ["collapse.csv"])
    ckpt = resolve_checkpoint(checkpoint, checkpoint_options)
    source = resolve_source(data, data_root=data_root, download=download, default_split="train")
    check_labelled(source, ckpt.num_classes, "fit")
    notes = _calibrated(ckpt, source, device, batch_size, report, cache_dir, use_cache)
    extract = _extractor(ckpt, layers, device, batch_size, cache_dir, use_cache, progress)
    fs = extract(source)
    run = RunInfo.new(ckpt, group=group)
    result = LayersResult(run_id=run.run_id, checkpoint=ckpt, ood=pd.DataFrame(columns=OOD_COLUMNS),
                          collapse=collapse_table(fs, ckpt, run), id_accuracy=accuracy(fs, ckpt.num_classes),
                          from_cache=extract.from_cache, notes=notes)
    if out is not None:
        result.out = write_tables(out, {"collapse.csv": result.collapse})
    return result


def layers(checkpoint, id, ood, fit=None, *, scorers=None, layers=None, out=None, device=None, batch_size=256,
           cache_dir=None, use_cache=True, fit_split=None, seed=0, group=None, progress=True, data_root=None,
           download=False, checkpoint_options=None, scorer_params=None, plot=True, transfer=None,
           transfer_fraction=0.5, val_ood=None, save_scores=False, report=None) -> LayersResult:
    """The main job: per-layer NC metrics and OOD scores of ``checkpoint`` for ID set ``id`` against ``ood``.

    ``fit`` defaults to the ID set's train split; for a file or folder without one, give ``fit`` or
    ``fit_split`` (a fraction of the ID set, per class, held out as the fit set). With ``out``, rows
    are appended to ``out/ood.csv`` and ``out/collapse.csv`` and a plot is written to ``out/<run_id>.png``.
    ``scorer_params``: ``{"knn": {"k": 10}}`` or ``["knn.k=10", ...]``; the values used are in the
    ``params`` column. ``transfer``: labelled shifted sets (specs, ``NAME=SPEC``) for a per-layer linear probe, written to
    ``out/transfer.csv``; the across-layer NC1 correlations go to ``out/correlation.csv``.
    ``val_ood``: validation OOD sets on which each tunable scorer's grid is searched (AUROC against
    the ID set); the test OOD sets never influence the choice, recorded in ``params``/``tuned_on``.
    ``save_scores``: keep every per-sample score vector in ``result.scores`` (and, with ``out``,
    write ``out/<run_id>.scores.npz``).
    """
    if out is not None:
        check_out(out)
    inputs = resolve_layers_inputs(checkpoint, id, ood, fit, fit_split=fit_split, seed=seed, scorers=scorers,
                                   scorer_params=scorer_params, transfer=transfer, val_ood=val_ood, data_root=data_root, download=download,
                                   checkpoint_options=checkpoint_options)
    ckpt = inputs.checkpoint
    labelled = inputs.fit if inputs.fit is not None else inputs.id.subset(inputs.split[0], "fit")
    notes = _calibrated(ckpt, labelled, device, batch_size, report, cache_dir, use_cache)
    extract = _extractor(ckpt, layers, device, batch_size, cache_dir, use_cache, progress)
    feats = extract_layers_features(inputs, extract)
    run = RunInfo.new(ckpt, group=group, seed=seed)
    tables = layers_tables(ckpt, feats, inputs.scorers, run, scorer_params=inputs.scorer_params,
                           transfer_fraction=transfer_fraction, progress=progress, keep_scores=save_scores)
    result = LayersResult(run_id=run.run_id, checkpoint=ckpt, ood=tables.ood, collapse=tables.collapse,
                          id_accuracy=tables.id_accuracy, from_cache=extract.from_cache, transfer=tables.transfer,
                          correlation=tables.correlation, scores=tables.scores, notes=notes)
    result.extras["features"] = {"fit": feats.fit, "id": feats.id, "ood": feats.ood, "transfer": feats.transfer,
                                 "val": feats.val}
    if out is not None:
        result.out = write_tables(out, {"ood.csv": tables.ood, "collapse.csv": tables.collapse,
                                        "transfer.csv": tables.transfer, "correlation.csv": tables.correlation})
        if save_scores:
            result.scores_path = write_scores(result.out, tables.scores, run.run_id)
        if plot:
            result.plot_path = write_layers_plot(result.out, tables.collapse, tables.ood, run.run_id,
                                                 title=f"{ckpt.name} ({ckpt.arch}) - ID {feats.id.name}")
    return result
