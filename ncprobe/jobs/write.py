"""Step 4: append a run's tables to the long-format CSVs of an output folder, and draw its figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..report.csvlog import append_rows


def write_tables(out, tables: dict[str, pd.DataFrame]) -> Path:
    """Append each non-empty table to ``out/<file name>`` (created with a header), in the given order."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if table is not None and not table.empty:
            append_rows(out / name, table)
    return out


def write_layers_plot(out, collapse: pd.DataFrame, ood: pd.DataFrame, run_id: str, title: str) -> Path:
    """NC1 and every scorer's AUROC against depth, to ``out/<run_id>.png``."""
    from ..report.plot import plot_layers  # matplotlib: only when a figure is drawn

    return plot_layers(collapse, ood, Path(out) / f"{run_id}.png", title=title)


def write_scores(out, scores: pd.DataFrame, run_id: str) -> Path:
    """Per-sample scores to ``out/<run_id>.scores.npz``: ``set`` (str, one per row), ``index`` (the
    row's index in its data source), ``label`` (-1 where unknown), ``columns`` (``layer/scorer``
    names) and ``scores`` (float64, rows x columns; higher = more in-distribution). Written to a
    temporary name and renamed, so a reader never sees half a file."""
    import os

    path = Path(out) / f"{run_id}.scores.npz"
    tmp = path.with_name(f".{path.name}.tmp.npz")
    columns = [c for c in scores.columns if c not in ("set", "index", "label")]
    np.savez(tmp, set=scores["set"].to_numpy(dtype=str), index=scores["index"].to_numpy(np.int64),
             label=scores["label"].to_numpy(np.int64), columns=np.asarray(columns, dtype=str),
             scores=scores[columns].to_numpy(np.float64))
    os.replace(tmp, path)
    return path


def read_scores(path) -> pd.DataFrame:
    """A file written by :func:`write_scores` back as the wide DataFrame (set, index, label, layer/scorer...)."""
    with np.load(path, allow_pickle=False) as z:
        table = pd.DataFrame({"set": z["set"], "index": z["index"], "label": z["label"]})
        for i, name in enumerate(z["columns"].tolist()):
            table[name] = z["scores"][:, i]
    return table
