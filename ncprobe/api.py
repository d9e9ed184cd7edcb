"""The Python API, for notebooks and scripts: the same jobs as the CLI, returning pandas DataFrames.

Each job is the same four steps (:mod:`ncprobe.jobs`): resolve the inputs and check them before any
forward pass, extract features (once per set, cached), compute the tables, write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .checkpoint.loaded import LoadedCheckpoint
from .distributed import world
from .errors import ParameterError
from .jobs.calibrate import calibrate
from .jobs.compute import accuracy, layers_tables
from .jobs.extract import FeatureExtractor, SharedExtractor, extract_layers_features
from .jobs.inputs import (
    check_labelled,
    expand_checkpoints,
    resolve_checkpoint,
    resolve_layers_inputs,
    resolve_source,
)
from .jobs.trajectory import (
    measure_collapse,
    order_points,
    point_run,
    trajectory_frame,
    write_trajectory_plot,
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
           "BenchResult", "bench", "collapse", "evaluate", "layers", "layers_many"]


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


def _extractor(ckpt, layers, device, batch_size, cache_dir, use_cache, progress, workers=0,
               cache_dtype="float32") -> FeatureExtractor:
    return FeatureExtractor(ckpt, layers=layers, device=device, batch_size=batch_size, cache_dir=cache_dir,
                            use_cache=use_cache, progress=progress, workers=workers, dtype=cache_dtype)


def evaluate(checkpoint, data, *, device=None, batch_size=256, cache_dir=None, use_cache=True, progress=True,
             data_root=None, download=False, checkpoint_options=None, report=None, workers=0, cache_dtype="float32") -> float:
    """Top-1 accuracy of ``checkpoint`` on the labelled set ``data``. ``report(line)`` receives the
    run's notes (the calibrated normalization when nothing said it)."""
    ckpt = resolve_checkpoint(checkpoint, checkpoint_options)
    source = resolve_source(data, data_root=data_root, download=download)
    check_labelled(source, ckpt.num_classes, "evaluation")
    _calibrated(ckpt, source, device, batch_size, report, cache_dir, use_cache)
    fs = _extractor(ckpt, [], device, batch_size, cache_dir, use_cache, progress, workers, cache_dtype)(source)
    if fs is None:  # a distributed rank other than 0: its share went to rank 0
        return None
    return accuracy(fs, ckpt.num_classes)


def collapse(checkpoint, data, *, layers=None, out=None, device=None, batch_size=256, cache_dir=None,
             use_cache=True, progress=True, data_root=None, download=False, checkpoint_options=None,
             group=None, report=None, workers=0, cache_dtype="float32") -> LayersResult:
    """Per-layer NC statistics of ``checkpoint`` on the labelled set ``data`` (written to ``out/collapse.csv``)."""
    if out is not None:
        check_out(out, ["collapse.csv"])
    ckpt = resolve_checkpoint(checkpoint, checkpoint_options)
    source = resolve_source(data, data_root=data_root, download=download, default_split="train")
    run = RunInfo.new(ckpt, group=group)
    table, fs, notes, extract = measure_collapse(ckpt, source, run, layers=layers, device=device,
                                                 batch_size=batch_size, cache_dir=cache_dir, use_cache=use_cache,
                                                 progress=progress, report=report, workers=workers, dtype=cache_dtype)
    if fs is None:  # a distributed rank other than 0: rank 0 reports
        return None
    result = LayersResult(run_id=run.run_id, checkpoint=ckpt, ood=pd.DataFrame(columns=OOD_COLUMNS),
                          collapse=table, id_accuracy=accuracy(fs, ckpt.num_classes),
                          from_cache=extract.from_cache, notes=notes)
    if out is not None:
        result.out = write_tables(out, {"collapse.csv": result.collapse})
    return result


def layers(checkpoint, id, ood, fit=None, *, scorers=None, layers=None, out=None, device=None, batch_size=256,
           cache_dir=None, use_cache=True, fit_split=None, seed=0, group=None, progress=True, data_root=None,
           download=False, checkpoint_options=None, scorer_params=None, plot=True, transfer=None,
           transfer_fraction=0.5, val_ood=None, save_scores=False, csid=None, ood_groups=None,
           report=None, workers=0, cache_dtype="float32") -> LayersResult:
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
    write ``out/<run_id>.scores.npz``). ``csid``: covariate-shifted ID sets counted as ID
    (full-spectrum detection). ``ood_groups``: OOD set name -> ``near``/``far`` (the ``ood_group`` column).
    """
    kwargs = {k: v for k, v in locals().items() if k not in ("checkpoint", "id", "ood", "fit")}
    return layers_many([checkpoint], id, ood, fit, **kwargs)[0]


def layers_many(checkpoints, id, ood, fit=None, *, scorers=None, layers=None, out=None, device=None, batch_size=256,
                cache_dir=None, use_cache=True, fit_split=None, seed=0, group=None, progress=True, data_root=None,
                download=False, checkpoint_options=None, scorer_params=None, plot=True, transfer=None,
                transfer_fraction=0.5, val_ood=None, save_scores=False, csid=None, ood_groups=None,
                report=None, workers=0, cache_dtype="float32") -> list[LayersResult]:
    """:func:`layers` for several checkpoints (e.g. the seeds of a recipe, or every epoch of a run)
    in one call: each is its own run in the same tables, and every dataset is read and decoded once
    for all of them (one pass over its batches feeds every model whose features are not cached).

    Every input is checked for every checkpoint before the first forward pass; each run's rows are
    written as soon as it is scored, so a failure later loses nothing already written.
    """
    if out is not None:
        check_out(out)
    ckpts = [resolve_checkpoint(c, checkpoint_options) for c in checkpoints]
    if not ckpts:
        raise ParameterError("no checkpoint given; pass at least one CKPT")
    seen: dict[str, str] = {}
    for ck in ckpts:
        ident = ck.sha256 or ck.weights_fingerprint
        if ident in seen:
            raise ParameterError(f"the checkpoint {ck.source!r} is given twice ({seen[ident]!r} has the same "
                                 "weights); each would be a duplicate run: give each checkpoint once")
        seen[ident] = str(ck.source)
    first = resolve_layers_inputs(ckpts[0], id, ood, fit, fit_split=fit_split, seed=seed, scorers=scorers,
                                  scorer_params=scorer_params, transfer=transfer, val_ood=val_ood, csid=csid,
                                  data_root=data_root, download=download)
    every = [first] + [  # the sources resolved (and read) once, checked again against each head
        resolve_layers_inputs(ck, first.id, first.ood, first.fit, fit_split=fit_split, seed=seed,
                              scorers=first.scorers, scorer_params=first.scorer_params, transfer=first.transfer,
                              val_ood=first.val, csid=first.csid)
        for ck in ckpts[1:]
    ]
    notes = []
    for inputs in every:
        labelled = inputs.fit if inputs.fit is not None else inputs.id.subset(inputs.split[0], "fit")
        notes.append(_calibrated(inputs.checkpoint, labelled, device, batch_size, report, cache_dir, use_cache))
    shared = SharedExtractor(ckpts, layers=layers, device=device, batch_size=batch_size, cache_dir=cache_dir,
                             use_cache=use_cache, progress=progress, workers=workers, dtype=cache_dtype)
    results = []
    for i, inputs in enumerate(every):
        extract = shared.view(i)
        feats = extract_layers_features(inputs, extract)
        if feats is None:  # a distributed rank other than 0: rank 0 scores and writes
            results.append(None)
            continue
        results.append(_layers_result(inputs, feats, extract, notes[i], out=out, group=group, seed=seed,
                                      transfer_fraction=transfer_fraction, progress=progress,
                                      save_scores=save_scores, plot=plot, ood_groups=ood_groups))
    return results


@dataclass
class BenchResult:
    """What one ``bench`` call produced: each checkpoint's run and the near/far table over them."""

    preset: str
    runs: list[LayersResult]
    table: pd.DataFrame
    out: Path | None = None


def bench(preset, checkpoints, *, data_root=None, sets=None, full_spectrum=False, tune=False, scorers=None,
          layers=None, out=None, device=None, batch_size=256, cache_dir=None, use_cache=True, group=None,
          progress=True, download=False, checkpoint_options=None, scorer_params=None, plot=True,
          save_scores=False, report=None, workers=0, cache_dtype="float32") -> BenchResult:
    """A standard benchmark (``ncprobe/benchmarks.yaml``: OpenOOD v1.5 CIFAR-10/100, ImageNet-200/1K,
    DDU) for one or more checkpoints: the preset's fit, ID and near/far OOD sets are resolved under
    ``data_root`` (``sets={"svhn": "svhn.npz"}`` points any of them elsewhere), every checkpoint is
    scored as in :func:`layers_many` with the ``ood_group`` column filled in, and ``table`` holds
    near- and far-OOD AUROC / FPR95 averages per run and scorer at its best layer and at the
    penultimate (appended to ``out/bench.csv``). ``tune``: choose hyper-parameters on the preset's
    validation OOD sets; ``full_spectrum``: count its covariate-shifted ID sets as ID.
    """
    from .jobs.presets import get_preset, parse_overrides, resolve_preset
    from .report.leaderboard import near_far_table

    if out is not None:
        check_out(out, ["ood.csv", "collapse.csv", "bench.csv"])
    chosen = get_preset(preset)
    overrides = sets if isinstance(sets, dict) else parse_overrides(sets)
    src = resolve_preset(chosen, data_root=data_root, overrides=overrides, full_spectrum=full_spectrum, tune=tune,
                         download=download)
    runs = layers_many(checkpoints, src.id, src.ood, src.fit, scorers=scorers, layers=layers, out=out, device=device,
                       batch_size=batch_size, cache_dir=cache_dir, use_cache=use_cache, group=group,
                       progress=progress, checkpoint_options=checkpoint_options, scorer_params=scorer_params,
                       plot=plot, val_ood=src.val, save_scores=save_scores, csid=src.csid,
                       ood_groups=src.ood_groups, report=report, workers=workers, cache_dtype=cache_dtype)
    table = near_far_table(pd.concat([r.ood for r in runs], ignore_index=True))
    table.insert(0, "preset", chosen.name)
    result = BenchResult(preset=chosen.name, runs=runs, table=table)
    if out is not None:
        result.out = write_tables(out, {"bench.csv": table})
    return result


def _layers_result(inputs, feats, extract, notes, *, out, group, seed, transfer_fraction, progress, save_scores,
                   plot, ood_groups) -> LayersResult:
    """Tables of one checkpoint's run from its features, written to ``out`` when given."""
    ckpt = inputs.checkpoint
    run = RunInfo.new(ckpt, group=group, seed=seed)
    tables = layers_tables(ckpt, feats, inputs.scorers, run, scorer_params=inputs.scorer_params,
                           transfer_fraction=transfer_fraction, progress=progress, keep_scores=save_scores,
                           ood_groups=ood_groups)
    result = LayersResult(run_id=run.run_id, checkpoint=ckpt, ood=tables.ood, collapse=tables.collapse,
                          id_accuracy=tables.id_accuracy, from_cache=extract.from_cache, transfer=tables.transfer,
                          correlation=tables.correlation, scores=tables.scores, notes=notes)
    result.extras["features"] = {"fit": feats.fit, "id": feats.id, "ood": feats.ood, "transfer": feats.transfer,
                                 "val": feats.val, "csid": feats.csid}
    if out is not None:
        result.out = write_tables(out, {"ood.csv": tables.ood, "collapse.csv": tables.collapse,
                                        "transfer.csv": tables.transfer, "correlation.csv": tables.correlation})
        if save_scores:
            result.scores_path = write_scores(result.out, tables.scores, run.run_id)
        if plot:
            result.plot_path = write_layers_plot(result.out, tables.collapse, tables.ood, run.run_id,
                                                 title=f"{ckpt.name} ({ckpt.arch}) - ID {feats.id.name}")
    return result


# ------------------------------------------------------------------ collapse over training (trajectories)

@dataclass
class TrajectoryResult:
    """What ``collapse_trajectory`` produced: one point per checkpoint, in trajectory order."""

    run_id: str
    checkpoints: list  # display names, in trajectory order
    epochs: list  # their stored epochs (None where a checkpoint stores none)
    collapse: pd.DataFrame  # collapse.csv rows of every checkpoint
    trajectory: pd.DataFrame  # trajectory.csv rows
    from_cache: dict = field(default_factory=dict)
    out: Path | None = None
    plot_path: Path | None = None
    notes: list = field(default_factory=list)


def collapse_trajectory(checkpoints, data, *, layers=None, out=None, device=None, batch_size=256, cache_dir=None,
                        use_cache=True, progress=True, data_root=None, download=False, checkpoint_options=None,
                        group=None, plot=True, report=None, workers=0, cache_dtype="float32") -> TrajectoryResult:
    """``collapse`` of every checkpoint in ``checkpoints`` (paths, quoted globs such as
    ``"runs/m.epoch*.safetensors"``, or loaded checkpoints) on the labelled set ``data`` (resolved once),
    as one trajectory ordered by each checkpoint's stored epoch (the given order, with a note, when one
    stores none). Each point is measured as :func:`collapse` measures it; the rows share one run id.
    With ``out``: every checkpoint's rows appended to ``out/collapse.csv`` and the trajectory to
    ``out/trajectory.csv`` in one transaction, and NC1 against epoch drawn to ``out/<run_id>.trajectory.png``."""
    if out is not None:
        check_out(out, ["collapse.csv", "trajectory.csv"])
    items = expand_checkpoints(checkpoints)
    source = resolve_source(data, data_root=data_root, download=download, default_split="train")
    shared, points, notes, from_cache = None, [], [], {}
    for item in items:
        ckpt = resolve_checkpoint(item, checkpoint_options)
        shared = shared or RunInfo.new(ckpt, group=group)  # the trajectory's run id and time
        run = point_run(ckpt, run_id=shared.run_id, timestamp=shared.timestamp, group=group)
        table, _, point_notes, extract = measure_collapse(ckpt, source, run, layers=layers, device=device,
                                                          batch_size=batch_size, cache_dir=cache_dir,
                                                          use_cache=use_cache, progress=progress, report=report,
                                                          workers=workers, dtype=cache_dtype)
        points.append((ckpt.name, ckpt.epoch, run, table))
        notes.extend(point_notes)
        from_cache[ckpt.name] = all(extract.from_cache.values())
        del ckpt, extract  # one model in memory at a time
    if not world().is_main:  # a distributed rank other than 0: rank 0 writes the trajectory
        return None
    order, note = order_points([p[1] for p in points], [p[0] for p in points])
    if note:
        notes.append(note)
        if report is not None:
            report(note)
    ordered = [points[i] for i in order]
    collapse_rows = pd.concat([p[3] for p in ordered], ignore_index=True)
    trajectory = pd.concat([trajectory_frame(p[3], p[2], step=k + 1) for k, p in enumerate(ordered)],
                           ignore_index=True)
    result = TrajectoryResult(run_id=shared.run_id, checkpoints=[p[0] for p in ordered],
                              epochs=[p[1] for p in ordered], collapse=collapse_rows, trajectory=trajectory,
                              from_cache=from_cache, notes=notes)
    if out is not None:
        result.out = write_tables(out, {"collapse.csv": collapse_rows, "trajectory.csv": trajectory})
        if plot:
            title = f"{', '.join(dict.fromkeys(trajectory['arch'].astype(str)))} on {source.name}"
            result.plot_path = write_trajectory_plot(result.out, trajectory, f"{shared.run_id}.trajectory",
                                                     title=title)
    return result


__all__ += ["TrajectoryResult", "collapse_trajectory"]
