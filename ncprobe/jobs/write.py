"""Step 4: append a run's tables to the long-format CSVs of an output folder, and draw its figure."""

from __future__ import annotations

from pathlib import Path

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
