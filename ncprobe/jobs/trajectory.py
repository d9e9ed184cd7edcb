"""Collapse over training: NC metrics (and OOD AUROCs) of one run across epochs or checkpoints.

A trajectory is the long-format table ``trajectory.csv`` (:data:`~ncprobe.report.schema.TRAJECTORY_COLUMNS`):
one row per (epoch or checkpoint, layer, metric). Every point is measured exactly as ``ncprobe collapse``
measures one checkpoint (:func:`measure_collapse` is the same sequence of steps as
:func:`ncprobe.api.collapse`: the labelled-set check, calibration when nothing fixed the normalization,
one extraction pass, :func:`~ncprobe.jobs.compute.collapse_table`), so tracking during training
(``ncprobe finetune --track``) and ``ncprobe collapse A.ckpt B.ckpt ...`` over the saved checkpoints give
the same numbers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ..checkpoint.loaded import LoadedCheckpoint
from ..data.source import DataSource
from ..data.spec import parse_spec
from ..distributed import world
from ..errors import NcprobeError
from ..report.csvlog import os_error
from ..report.schema import TRAJECTORY_COLUMNS, RunInfo, stamp
from ..stats.collapse import NC_COLUMNS
from .calibrate import calibrate
from .compute import collapse_table, layer_stats, ood_frame
from .extract import FeatureExtractor
from .inputs import check_labelled

#: default size of the seeded subset of the training set that ``finetune --track`` measures
TRACK_N = 1000
#: its seed (the ``seed=`` option of the subset's spec)
TRACK_SEED = 0
#: scorers whose AUROC is tracked against the ``--track-ood`` sets by default
TRACK_SCORERS = ("energy", "mahalanobis")
#: the trajectory's table and the suffix of its figure
TRAJECTORY_TABLE = "trajectory.csv"


def track_spec(train_spec: str, available: int, n: int | None = None, seed: int = TRACK_SEED) -> tuple[str, str | None]:
    """(spec, note) of the fixed seeded subset of the training set that tracking measures.

    ``available``: the number of images the training spec loads. With ``n`` (default :data:`TRACK_N`)
    at least that, the training spec itself (the whole set); otherwise the spec with ``n=N`` added (and
    ``seed=SEED`` unless it has a seed), so that ``ncprobe collapse CKPT --data SPEC`` measures the
    same images. ``note`` says when the training spec is itself a subsample (its own ``n=``): the
    subset is then drawn from the set before that subsampling, not only from the training images."""
    want = TRACK_N if n is None else int(n)
    if want < 2:
        raise NcprobeError(f"the tracking subset needs at least 2 images, got n={want}")
    if available <= want:
        return train_spec, None
    parsed = parse_spec(train_spec)
    options = dict(parsed.options)
    note = None
    if "n" in options:
        note = (f"note: {train_spec!r} is itself a subsample; the tracking subset of {want} images is drawn "
                "from the set before it, so it may hold images the model did not train on")
    options["n"] = want
    options.setdefault("seed", int(seed))
    return parsed.with_(options=options).to_string(), note


def run_seed(ckpt: LoadedCheckpoint) -> int:
    """The training seed stored in an ncprobe checkpoint's recipe (0 for other checkpoints)."""
    config = (ckpt.recipe or {}).get("config") or {}
    try:
        return int(config.get("seed") or 0)
    except (TypeError, ValueError):
        return 0


def point_run(ckpt: LoadedCheckpoint, *, run_id: str | None = None, timestamp: str | None = None,
              group: str | None = None) -> RunInfo:
    """The :class:`RunInfo` of one trajectory point: the checkpoint's own facts (name, sha256, recipe,
    epoch, training seed) under the trajectory's shared run id and time when given."""
    run = RunInfo.new(ckpt, group=group, seed=run_seed(ckpt))
    changes = {k: v for k, v in (("run_id", run_id), ("timestamp", timestamp)) if v is not None}
    return dataclasses.replace(run, **changes) if changes else run


def measure_collapse(ckpt: LoadedCheckpoint, source: DataSource, run: RunInfo, *, layers=None, device=None,
                     batch_size: int = 256, cache_dir=None, use_cache: bool = True, progress: bool = False,
                     report=None, workers: int = 0, dtype: str = "float32"):
    """(collapse rows, fit features, notes, extractor) of ``ckpt`` on the labelled ``source``: the steps of
    :func:`ncprobe.api.collapse`, in its order."""
    check_labelled(source, ckpt.num_classes, "fit")
    note = calibrate(ckpt, source, device=device, batch_size=batch_size, cache_dir=cache_dir, use_cache=use_cache)
    if note and report is not None:
        report(note)
    extract = FeatureExtractor(ckpt, layers=layers, device=device, batch_size=batch_size, cache_dir=cache_dir,
                               use_cache=use_cache, progress=progress, workers=workers, dtype=dtype)
    fs = extract(source, class_stats=world().distributed)
    if fs is None:  # a distributed rank other than 0: its share went to rank 0
        return None, None, [note] if note else [], extract
    return collapse_table(fs, ckpt, run), fs, [note] if note else [], extract


def ood_aurocs(ckpt: LoadedCheckpoint, fit_fs, id_fs, ood_fss: list, scorers) -> pd.DataFrame:
    """AUROC rows (layer, layer_index, scorer, ood, auroc, n_ood) of ``scorers`` fitted on ``fit_fs``,
    ``id_fs`` against each OOD feature set, at every layer where each scorer applies."""
    if not ood_fss or not scorers:
        return pd.DataFrame()
    stats = layer_stats(fit_fs, ckpt.num_classes)
    table = ood_frame(fit_fs, id_fs, list(ood_fss), stats, ckpt.head_weights(), list(scorers))
    return table[["layer", "layer_index", "scorer", "ood", "auroc", "n_ood"]]


def trajectory_frame(collapse: pd.DataFrame, run: RunInfo, *, step: int, ood: pd.DataFrame | None = None) -> pd.DataFrame:
    """The trajectory rows of one point: every NC metric of every layer of the stamped ``collapse``
    table that has a value (NC3/NC4 only at the classifier input), then ``ood``'s AUROCs
    (``metric`` = ``auroc``, with ``scorer`` and ``ood``), stamped with ``run`` and ``step``."""
    metrics = [m for m in NC_COLUMNS if m in collapse.columns]
    nc = collapse.melt(id_vars=["layer", "layer_index", "n", "data"], value_vars=metrics, var_name="metric",
                       value_name="value")
    nc = nc[pd.to_numeric(nc["value"], errors="coerce").notna()]
    nc = nc.assign(order=nc["metric"].map({m: i for i, m in enumerate(metrics)}), scorer="", ood="")
    nc = nc.sort_values(["layer_index", "order"], kind="stable").drop(columns="order")
    parts = [nc]
    if ood is not None and not ood.empty:
        data = collapse["data"].iloc[0] if len(collapse) else ""
        parts.append(pd.DataFrame({"layer": ood["layer"], "layer_index": ood["layer_index"], "n": ood["n_ood"],
                                   "data": data, "metric": "auroc", "value": ood["auroc"], "scorer": ood["scorer"],
                                   "ood": ood["ood"]}))
    rows = pd.concat(parts, ignore_index=True)
    rows["value"] = rows["value"].astype(np.float64)
    return stamp(rows, run, TRAJECTORY_COLUMNS, step=int(step))


def order_points(epochs: list, names: list[str]) -> tuple[list[int], str | None]:
    """(indices in trajectory order, note) of points with stored ``epochs`` (None where a checkpoint
    stores none): by epoch, ties keeping the given order; when any epoch is missing, the given order,
    said in one line naming those checkpoints."""
    missing = [name for name, epoch in zip(names, epochs, strict=True) if epoch is None]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return list(range(len(epochs))), (f"note: {shown} store{'s' if len(missing) == 1 else ''} no epoch; "
                                          "the trajectory follows the order the checkpoints were given")
    return sorted(range(len(epochs)), key=lambda i: epochs[i]), None


def write_trajectory_plot(out, trajectory: pd.DataFrame, name: str, title: str = "", metric: str = "nc1") -> Path | None:
    """``metric`` against epoch, one line per layer (log y), to ``out/<name>.png``; None when there is no row."""
    from ..report.trajectory_plot import plot_trajectory  # matplotlib: only when a figure is drawn

    rows = trajectory[trajectory["metric"] == metric]
    if rows.empty:
        return None
    path = Path(out) / f"{name}.png"
    try:
        return plot_trajectory(rows, path, title=title, metric=metric)
    except OSError as exc:
        raise os_error(path, exc) from exc


__all__ = ["TRACK_N", "TRACK_SCORERS", "TRACK_SEED", "TRAJECTORY_TABLE",
           "measure_collapse", "ood_aurocs", "order_points", "point_run", "run_seed", "track_spec",
           "trajectory_frame", "write_trajectory_plot"]
