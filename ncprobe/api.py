"""The Python API, for notebooks and scripts: the same jobs as the CLI, returning pandas DataFrames."""

from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .checkpoint import load_checkpoint
from .checkpoint.loaded import LoadedCheckpoint
from .data import fit_spec_for, load_dataset
from .data.source import DataSource
from .errors import NcprobeError
from .features import extract_features
from .pipeline import (
    accuracy,
    check_class_sizes,
    check_labels,
    collapse_frame,
    layer_stats,
    ood_frame,
    parse_scorers,
    stratified_split,
)
from .report.csvlog import append_rows

OOD_COLUMNS = ["run_id", "timestamp", "checkpoint", "checkpoint_sha256", "arch", "mode", "id", "fit", "ood",
               "layer", "layer_index", "dim", "scorer", "auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_oodpos",
               "id_accuracy", "n_fit", "n_id", "n_ood", "seed", "group", "ncprobe_version"]
COLLAPSE_COLUMNS = ["checkpoint", "checkpoint_sha256", "arch", "data", "layer", "layer_index", "dim", "n",
                    "classes", "nc1", "nc2_equinorm", "nc2_equiangular", "nc2_etf", "nc3", "nc4", "ncc_acc",
                    "tr_ratio", "cdnv", "run_id", "timestamp", "mode", "group"]

TRANSFER_COLUMNS = ["run_id", "timestamp", "checkpoint", "checkpoint_sha256", "arch", "mode", "transfer", "layer",
                    "layer_index", "dim", "transfer_acc", "n_train", "n_test", "transfer_classes", "seed", "group"]


@dataclass
class LayersResult:
    """What one ``layers`` run produced: long-format tables plus where they were written."""

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


def new_run_id() -> tuple[str, str]:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3), now.isoformat(timespec="seconds")


def as_checkpoint(checkpoint, **kwargs) -> LoadedCheckpoint:
    if isinstance(checkpoint, LoadedCheckpoint):
        return checkpoint
    return load_checkpoint(checkpoint, **kwargs)


def as_source(spec, *, data_root=None, download=False, default_split="test") -> DataSource:
    if isinstance(spec, DataSource):
        return spec
    return load_dataset(str(spec), data_root=data_root, download=download, default_split=default_split)


def mode_of(ckpt: LoadedCheckpoint) -> str:
    return ckpt.mode


def evaluate(checkpoint, data, *, device=None, batch_size=256, cache_dir=None, use_cache=True, progress=True,
             data_root=None, download=False, checkpoint_options=None) -> float:
    """Top-1 accuracy of ``checkpoint`` on the labelled set ``data``."""
    ckpt = as_checkpoint(checkpoint, **(checkpoint_options or {}))
    source = as_source(data, data_root=data_root, download=download)
    check_labels(source, ckpt.num_classes, "evaluation")
    fs = extract_features(ckpt, source, layers=[], device=device, batch_size=batch_size, cache_dir=cache_dir,
                          use_cache=use_cache, progress=progress)
    return accuracy(fs, ckpt.num_classes)


def collapse(checkpoint, data, *, layers=None, out=None, device=None, batch_size=256, cache_dir=None,
             use_cache=True, progress=True, data_root=None, download=False, checkpoint_options=None,
             group=None) -> LayersResult:
    """Per-layer NC statistics of ``checkpoint`` on the labelled set ``data`` (written to ``out/collapse.csv``)."""
    ckpt = as_checkpoint(checkpoint, **(checkpoint_options or {}))
    source = as_source(data, data_root=data_root, download=download, default_split="train")
    check_labels(source, ckpt.num_classes, "fit")
    fs = extract_features(ckpt, source, layers=layers, device=device, batch_size=batch_size, cache_dir=cache_dir,
                          use_cache=use_cache, progress=progress)
    run_id, stamp = new_run_id()
    stats = layer_stats(fs, ckpt.num_classes)
    table = collapse_frame(fs, stats, ckpt.head_weights())
    table = _decorate_collapse(table, ckpt, source.name, run_id, stamp, group)
    result = LayersResult(run_id=run_id, checkpoint=ckpt, ood=pd.DataFrame(columns=OOD_COLUMNS), collapse=table,
                          id_accuracy=accuracy(fs, ckpt.num_classes), from_cache={source.name: fs.from_cache})
    if out is not None:
        result.out = Path(out)
        result.out.mkdir(parents=True, exist_ok=True)
        append_rows(result.out / "collapse.csv", table)
    return result


def layers(checkpoint, id, ood, fit=None, *, scorers=None, layers=None, out=None, device=None, batch_size=256,
           cache_dir=None, use_cache=True, fit_split=None, seed=0, group=None, progress=True, data_root=None,
           download=False, checkpoint_options=None, scorer_params=None, plot=True, transfer=None,
           transfer_fraction=0.5) -> LayersResult:
    """The main job: per-layer NC metrics and OOD scores of ``checkpoint`` for ID set ``id`` against ``ood``.

    ``fit`` defaults to the ID set's train split; for a file or folder without one, give ``fit`` or
    ``fit_split`` (a fraction of the ID set, per class, held out as the fit set). With ``out``, rows
    are appended to ``out/ood.csv`` and ``out/collapse.csv`` and a plot is written to ``out/<run_id>.png``.
    ``transfer``: labelled shifted sets (specs, ``NAME=SPEC``) for a per-layer linear probe, written to
    ``out/transfer.csv``; the across-layer NC1 correlations go to ``out/correlation.csv``.
    """
    ckpt = as_checkpoint(checkpoint, **(checkpoint_options or {}))
    score_names = parse_scorers(scorers)
    if isinstance(ood, (str, DataSource)):
        ood = [ood]
    if not ood:
        raise NcprobeError("no OOD set given; pass at least one --ood SPEC")
    id_source = as_source(id, data_root=data_root, download=download, default_split="test")
    if fit is not None and fit_split is not None:
        raise NcprobeError("give either --fit or --fit-split, not both")
    if fit is None and fit_split is None:
        fit = fit_spec_for(id_source.spec) if not isinstance(id, DataSource) else None
        if fit is None:
            raise NcprobeError(
                f"the ID set {id_source.name!r} has no train split to fit on; pass --fit SPEC "
                f"or --fit-split 0.5 to hold out half of it"
            )
    if fit is not None:
        fit_source = as_source(fit, data_root=data_root, download=download, default_split="train")
        check_labels(fit_source, ckpt.num_classes, "fit")  # before any forward pass
        check_class_sizes(fit_source.labels, score_names)
    ood_sources = [as_source(s, data_root=data_root, download=download, default_split="test") for s in ood]
    for src in ood_sources:
        if len(src) == 0:
            raise NcprobeError(f"the OOD set {src.name!r} is empty; check its path and options")

    def feats(source):
        return extract_features(ckpt, source, layers=layers, device=device, batch_size=batch_size,
                                cache_dir=cache_dir, use_cache=use_cache, progress=progress)

    if fit_split is not None:
        check_labels(id_source, ckpt.num_classes, "ID")
        fit_idx, id_idx = stratified_split(np.asarray(id_source.labels), float(fit_split), seed)
        check_class_sizes(id_source.labels[fit_idx], score_names)  # before any forward pass
        id_all = feats(id_source)
        fit_fs, id_fs = id_all.subset(fit_idx), id_all.subset(id_idx)
        fit_fs.name = f"{id_source.name}[fit {fit_split}]"
        id_name = f"{id_source.name}[rest]"
        cache_flags = {id_source.name: id_all.from_cache}
    else:
        fit_fs, id_fs = feats(fit_source), feats(id_source)
        id_name = id_source.name
        cache_flags = {fit_source.name: fit_fs.from_cache, id_source.name: id_fs.from_cache}
    ood_sets = []
    for src in ood_sources:
        fs = feats(src)
        cache_flags[src.name] = fs.from_cache
        ood_sets.append(fs)

    transfer_sets = []
    for spec in ([transfer] if isinstance(transfer, (str, DataSource)) else list(transfer or [])):
        src = as_source(spec, data_root=data_root, download=download, default_split="test")
        fs = feats(src)
        cache_flags[src.name] = fs.from_cache
        transfer_sets.append(fs)

    run_id, stamp = new_run_id()
    head = ckpt.head_weights()
    stats = layer_stats(fit_fs, ckpt.num_classes)
    collapse_table = _decorate_collapse(collapse_frame(fit_fs, stats, head), ckpt, fit_fs.name, run_id, stamp, group)
    id_acc = accuracy(id_fs, ckpt.num_classes)
    ood_table = ood_frame(fit_fs, id_fs, ood_sets, stats, head, score_names, scorer_params, progress=progress)
    meta = {"run_id": run_id, "timestamp": stamp, "checkpoint": ckpt.name, "checkpoint_sha256": ckpt.sha256,
            "arch": ckpt.arch, "mode": mode_of(ckpt), "id": id_name, "fit": fit_fs.name, "id_accuracy": id_acc,
            "n_fit": len(fit_fs), "n_id": len(id_fs), "seed": seed, "group": group or "",
            "ncprobe_version": __version__}
    for key, value in meta.items():
        ood_table[key] = value
    ood_table = ood_table.reindex(columns=OOD_COLUMNS)
    from .transfer import (  # scipy.stats and sklearn: only for this job
        correlation_frame,
        transfer_frame,
    )

    transfer_table = pd.DataFrame(columns=TRANSFER_COLUMNS)
    if transfer_sets:
        parts = [transfer_frame(fs, fs.name, train_fraction=transfer_fraction, seed=seed) for fs in transfer_sets]
        transfer_table = pd.concat(parts, ignore_index=True)
        for key in ("run_id", "timestamp", "checkpoint", "checkpoint_sha256", "arch", "mode", "seed", "group"):
            transfer_table[key] = meta[key]
        transfer_table = transfer_table.reindex(columns=TRANSFER_COLUMNS)
    corr = correlation_frame(collapse_table, ood_table, transfer_table)
    for key in ("run_id", "checkpoint", "arch", "mode", "group"):
        corr[key] = meta[key]
    result = LayersResult(run_id=run_id, checkpoint=ckpt, ood=ood_table, collapse=collapse_table,
                          id_accuracy=id_acc, from_cache=cache_flags, transfer=transfer_table, correlation=corr)
    result.extras["features"] = {"fit": fit_fs, "id": id_fs, "ood": ood_sets, "transfer": transfer_sets}
    if out is not None:
        result.out = Path(out)
        result.out.mkdir(parents=True, exist_ok=True)
        append_rows(result.out / "ood.csv", ood_table)
        append_rows(result.out / "collapse.csv", collapse_table)
        if not transfer_table.empty:
            append_rows(result.out / "transfer.csv", transfer_table)
        append_rows(result.out / "correlation.csv", corr)
        if plot:
            from .report.plot import plot_layers

            result.plot_path = plot_layers(collapse_table, ood_table, result.out / f"{run_id}.png",
                                           title=f"{ckpt.name} ({ckpt.arch}) - ID {id_name}")
    return result


def _decorate_collapse(table, ckpt, data_name, run_id, stamp, group):
    table = table.copy()
    table["checkpoint"] = ckpt.name
    table["checkpoint_sha256"] = ckpt.sha256
    table["arch"] = ckpt.arch
    table["data"] = data_name
    table["run_id"] = run_id
    table["timestamp"] = stamp
    table["mode"] = mode_of(ckpt)
    table["group"] = group or ""
    return table.reindex(columns=COLLAPSE_COLUMNS)
