"""Collapse over training: what ``finetune(track=True)`` measures after every k-th epoch.

After the epoch's checkpoint is saved, the file is loaded back (so the model measured is exactly the
one ``ncprobe collapse`` would load) and measured on a fixed, seeded subset of the training set, given
as a dataset spec (:func:`ncprobe.jobs.trajectory.track_spec`), by the steps of ``ncprobe collapse``
with no feature cache. With OOD sets, the chosen scorers are fitted on that subset and their AUROC of
the ID validation set (``val``; without one, the tracking subset itself) against each OOD set is
recorded too. Rows go to ``trajectory.csv`` (one journaled append per epoch) and the figure of NC1
against epoch is redrawn. The measurement runs under a forked RNG, so tracking never changes the
trained weights. On resume, epochs already in the table under the run's id are not measured again,
and an epoch whose rows an interruption lost is measured on resume when its checkpoint is still the
latest.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoint import load_checkpoint
from ..data import load_dataset
from ..data.source import DataSource
from ..errors import DatasetError, NcprobeError
from ..jobs.inputs import check_class_sizes, resolve_scorers
from ..jobs.trajectory import (
    TRACK_SCORERS,
    TRAJECTORY_TABLE,
    measure_collapse,
    ood_aurocs,
    point_run,
    track_spec,
    trajectory_frame,
    write_trajectory_plot,
)
from ..jobs.write import check_out, write_tables
from ..report.csvlog import read_table
from ..report.schema import new_run_id


def epoch_path(out, epoch: int) -> Path:
    """Where ``save_every`` keeps the checkpoint of ``epoch``: ``<out stem>.epochNNN.safetensors``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.epoch{int(epoch):03d}{out.suffix}")


def _labelled_set(spec: str, data_root, what: str, num_classes: int) -> DataSource:
    src = load_dataset(spec, data_root=data_root, default_split="train")
    labels = np.asarray(src.labels)
    if len(src) < 2 or (labels < 0).any():
        raise DatasetError(f"the {what} {spec!r} must be a labelled set of at least 2 images (it has {len(src)}"
                           f"{', unlabelled' if len(labels) and (labels < 0).any() else ''})")
    if labels.max() >= num_classes:
        raise DatasetError(f"the {what} {spec!r} has label {int(labels.max())} but the model has {num_classes} "
                           "classes; track on the training classes (e.g. the same @classes=...)")
    if np.unique(labels).size < 2:
        raise DatasetError(f"the {what} {spec!r} holds one class; NC metrics need at least 2")
    return src


@dataclass
class Tracker:
    """The state of tracking one training run."""

    out_dir: Path
    spec: str
    source: DataSource
    id_source: DataSource
    ood: list
    scorers: list
    every: int
    epochs: int
    name: str
    title: str
    run_id: str
    timestamp: str
    device: object = None
    layers: object = None
    group: str | None = None
    progress: bool = False
    done: set = field(default_factory=set)

    @classmethod
    def start(cls, *, out: Path, data: str, train_src: DataSource, val_src: DataSource | None, num_classes: int,
              every: int = 1, epochs: int, track_data: str | None = None, track_n: int | None = None,
              track_ood=(), track_scorers=None, track_out=None, layers=None, group=None, device=None,
              data_root=None, state: dict | None = None, progress: bool = False, title: str = "", log=None) -> Tracker:
        """Resolve and check everything tracking reads, before the first epoch: the subset, the OOD sets,
        the scorers and the output folder; resume the run id of ``state`` and the epochs already recorded."""
        if int(every) < 1:
            raise NcprobeError(f"--track-every must be at least 1, got {every}")
        if track_data is not None and track_n is not None:
            raise NcprobeError("give either --track-data SPEC or --track-n N, not both")
        note = None
        if track_data is None:
            track_data, note = track_spec(data, len(train_src), track_n)
        if note and log is not None:
            log(note)
        source = _labelled_set(track_data, data_root, "tracking set", num_classes)
        ood = [load_dataset(s, data_root=data_root, default_split="test") for s in track_ood or ()]
        for src in ood:
            if len(src) == 0:
                raise DatasetError(f"the OOD set {src.name!r} is empty; check its path and options")
        scorers = resolve_scorers(track_scorers or list(TRACK_SCORERS)) if ood else []
        if scorers:
            check_class_sizes(source.labels, scorers, "tracking")
        out_dir = Path(track_out) if track_out is not None else Path(out).parent
        check_out(out_dir, [TRAJECTORY_TABLE])
        state = state or {}
        tracker = cls(out_dir=out_dir, spec=track_data, source=source,
                      id_source=val_src if val_src is not None else source, ood=ood, scorers=scorers,
                      every=int(every), epochs=int(epochs), name=f"{Path(out).stem}.trajectory", title=title,
                      run_id=str(state.get("track_run_id") or new_run_id()),
                      timestamp=str(state.get("track_timestamp") or _dt.datetime.now(_dt.timezone.utc)
                                    .isoformat(timespec="seconds")),
                      device=device, layers=layers, group=group, progress=progress)
        tracker.done = set(tracker._recorded()["epoch"].dropna().astype(int)) if state else set()
        return tracker

    def state(self) -> dict:
        """What the resume state keeps so that a resumed run appends under the same run id."""
        return {"track_run_id": self.run_id, "track_timestamp": self.timestamp}

    def _recorded(self) -> pd.DataFrame:
        """This run's rows already in trajectory.csv (none when the table does not exist yet)."""
        path = self.out_dir / TRAJECTORY_TABLE
        if not path.exists():
            return pd.DataFrame(columns=["run_id", "epoch", "metric"])
        table = read_table(path)
        return table[table["run_id"].astype(str) == self.run_id]

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) is measured: every k-th and the last; never twice."""
        return (epoch % self.every == 0 or epoch == self.epochs) and epoch not in self.done

    def measure(self, path: Path, epoch: int, log=None) -> pd.DataFrame | None:
        """Measure the checkpoint file ``path`` of epoch ``epoch``, append its rows, redraw the figure.
        None (nothing written) when the file is not that epoch's."""
        devices = [torch.device(self.device).index or 0] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            ckpt = load_checkpoint(str(path), map_location="cpu")
            if ckpt.epoch != epoch:
                return None
            run = point_run(ckpt, run_id=self.run_id, timestamp=self.timestamp, group=self.group)
            opts = {"layers": self.layers, "device": self.device, "use_cache": False, "progress": self.progress}
            collapse, fit_fs, _, extract = measure_collapse(ckpt, self.source, run, **opts)
            ood = None
            if self.ood:
                fss = [extract(src) for src in self.ood]
                id_fs = fit_fs if self.id_source is self.source else extract(self.id_source)
                ood = ood_aurocs(ckpt, fit_fs, id_fs, fss, self.scorers)
        rows = trajectory_frame(collapse, run, step=epoch, ood=ood)
        write_tables(self.out_dir, {TRAJECTORY_TABLE: rows})
        self.done.add(epoch)
        self.plot()
        if log is not None:
            pen = rows[(rows["metric"] == "nc1") & (rows["layer"] == "penultimate")]["value"]
            log(f"track epoch {epoch}: NC1 at penultimate {float(pen.iloc[0]):.4g}" if len(pen) else
                f"track epoch {epoch}: {len(rows)} rows")
        return rows

    def plot(self) -> Path | None:
        """Redraw NC1 against epoch from every row of this run in the table (earlier calls included)."""
        return write_trajectory_plot(self.out_dir, self._recorded(), self.name, title=self.title)


__all__ = ["Tracker", "epoch_path"]
