"""Step 4: append a run's tables to the long-format CSVs of an output folder, and draw its figure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import NcprobeError
from ..report.csvlog import append_tables, check_writable, os_error

RUN_TABLES = ("ood.csv", "collapse.csv", "transfer.csv", "correlation.csv")


def check_creatable(path, label: str | None = None) -> None:
    """Before any work: ``path`` (absent) could be created, i.e. its nearest existing ancestor is a
    writable folder on a real file system. Creates nothing; one-line NcprobeError otherwise."""
    path = Path(path)
    where = label or str(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise NcprobeError(f"{where}: {probe} is a file, so the folder cannot be created; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK) or str(probe.resolve()).startswith(("/proc", "/sys")):
        raise NcprobeError(f"{where}: {probe} is not a writable folder (permission denied or a virtual file "
                           "system); choose another path")


def check_out(out, tables=RUN_TABLES) -> Path:
    """Before any work: ``out`` is a writable folder whose tables can take rows, or can be created
    (nothing is created here, so a run that fails leaves no empty folder behind)."""
    out = Path(out)
    if out.is_dir():
        return check_writable(out, tables)
    if out.exists():
        raise NcprobeError(f"{out} is a file; give a directory for the CSVs and plots")
    check_creatable(out)
    return out


def write_tables(out, tables: dict[str, pd.DataFrame]) -> Path:
    """Append a run's non-empty tables to ``out/<file name>`` as one transaction: all rows or none."""
    return append_tables(out, tables)


def write_layers_plot(out, collapse: pd.DataFrame, ood: pd.DataFrame, run_id: str, title: str) -> Path:
    """NC1 and every scorer's AUROC against depth, to ``out/<run_id>.png``."""
    from ..report.plot import plot_layers  # matplotlib: only when a figure is drawn

    path = Path(out) / f"{run_id}.png"
    try:
        return plot_layers(collapse, ood, path, title=title)
    except OSError as exc:
        raise os_error(path, exc) from exc


def write_scores(out, scores: pd.DataFrame, run_id: str) -> Path:
    """Per-sample scores to ``out/<run_id>.scores.npz``: ``set`` (str, one per row), ``index`` (the
    row's index in its data source), ``label`` (-1 where unknown), ``columns`` (``layer/scorer``
    names) and ``scores`` (float64, rows x columns; higher = more in-distribution). Written to a
    temporary name and renamed, so a reader never sees half a file."""
    path = Path(out) / f"{run_id}.scores.npz"
    tmp = path.with_name(f".{path.name}.tmp.npz")
    columns = [c for c in scores.columns if c not in ("set", "index", "label")]
    try:
        np.savez(tmp, set=scores["set"].to_numpy(dtype=str), index=scores["index"].to_numpy(np.int64),
                 label=scores["label"].to_numpy(np.int64), columns=np.asarray(columns, dtype=str),
                 scores=scores[columns].to_numpy(np.float64))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(path, exc) from exc
    return path


def read_scores(path) -> pd.DataFrame:
    """A file written by :func:`write_scores` back as the wide DataFrame (set, index, label, layer/scorer...)."""
    with np.load(path, allow_pickle=False) as z:
        table = pd.DataFrame({"set": z["set"], "index": z["index"], "label": z["label"]})
        for i, name in enumerate(z["columns"].tolist()):
            table[name] = z["scores"][:, i]
    return table
