"""Comparing training curves of trajectory.csv: when does a metric first cross a threshold?

The question of Haas et al. (TMLR 2023), "does the L2-normalized head collapse earlier?", asked of the
rows of ``trajectory.csv`` (``ncprobe finetune --track`` or ``ncprobe collapse A B ...``): for each
training run, the first epoch at which NC1 at the penultimate layer is below a threshold, then the
mean and spread of that epoch over the seeds of each recipe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import render

#: the columns of :func:`first_epoch_below` besides the ``by`` columns
RUN_COLUMNS = ["seed", "run_id", "first_epoch", "last_epoch", "last_value", "reached"]
#: the columns of :func:`summarize_first_epoch` besides the ``by`` columns
SUMMARY_COLUMNS = ["runs", "reached", "first_epoch_mean", "first_epoch_std", "first_epoch_min", "first_epoch_max"]


def _by(by) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _select(trajectory: pd.DataFrame, metric: str, layer: str, scorer, ood) -> pd.DataFrame:
    rows = trajectory[(trajectory["metric"] == metric) & (trajectory["layer"] == layer)]
    if scorer is not None:
        rows = rows[rows["scorer"] == scorer]
    if ood is not None:
        rows = rows[rows["ood"] == ood]
    return rows


def _x(rows: pd.DataFrame) -> pd.Series:
    """The epoch of each row (the trajectory position ``step`` where no epoch is stored)."""
    epoch = pd.to_numeric(rows["epoch"], errors="coerce") if "epoch" in rows else pd.Series(np.nan, index=rows.index)
    if epoch.isna().any() and "step" in rows:
        epoch = epoch.fillna(pd.to_numeric(rows["step"], errors="coerce"))
    return epoch.astype(np.float64)


def first_epoch_below(trajectory: pd.DataFrame, threshold: float, metric: str = "nc1", layer: str = "penultimate",
                      by="recipe", *, scorer: str | None = None, ood: str | None = None,
                      above: bool = False) -> pd.DataFrame:
    """One row per training run (``by`` columns, ``seed``, ``run_id``): ``first_epoch``, the first epoch
    whose ``metric`` at ``layer`` is strictly below ``threshold`` (NaN when it never is), ``last_epoch``
    and ``last_value`` (the last point measured) and ``reached`` (bool).

    ``by``: a column or list of columns naming the recipe (``recipe``, ``group`` or ``mode``).
    ``scorer``/``ood`` select AUROC rows (``metric="auroc"``); ``above=True`` asks for the first epoch
    strictly *above* the threshold instead (for metrics where higher is better).
    """
    keys = [*_by(by), "seed", "run_id"]
    rows = _select(trajectory, metric, layer, scorer, ood).copy()
    if rows.empty:
        return pd.DataFrame(columns=[*_by(by), *RUN_COLUMNS])
    rows["_x"] = _x(rows)
    rows["_v"] = pd.to_numeric(rows["value"], errors="coerce").astype(np.float64)
    out = []
    for key, run in rows.groupby(keys, sort=True, dropna=False):
        run = run.sort_values("_x", kind="stable")
        hit = run["_v"] > threshold if above else run["_v"] < threshold
        first = float(run.loc[hit, "_x"].iloc[0]) if hit.any() else np.nan
        out.append({**dict(zip(keys, key, strict=True)), "first_epoch": first, "last_epoch": float(run["_x"].iloc[-1]),
                    "last_value": float(run["_v"].iloc[-1]), "reached": bool(hit.any())})
    return pd.DataFrame(out, columns=[*_by(by), *RUN_COLUMNS])


def summarize_first_epoch(per_run: pd.DataFrame, by="recipe") -> pd.DataFrame:
    """Per ``by`` group of :func:`first_epoch_below`'s rows: ``runs``, how many ``reached`` the threshold,
    and the mean, sample std (ddof 1; NaN with one run), min and max of ``first_epoch`` over the runs
    that reached it (NaN when none did)."""
    keys = _by(by)
    out = []
    for key, part in per_run.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        first = part["first_epoch"].astype(np.float64).dropna().to_numpy()
        out.append({**dict(zip(keys, key, strict=True)), "runs": len(part), "reached": int(first.size),
                    "first_epoch_mean": float(first.mean()) if first.size else np.nan,
                    "first_epoch_std": float(first.std(ddof=1)) if first.size > 1 else np.nan,
                    "first_epoch_min": float(first.min()) if first.size else np.nan,
                    "first_epoch_max": float(first.max()) if first.size else np.nan})
    return pd.DataFrame(out, columns=[*keys, *SUMMARY_COLUMNS])


def first_epoch_table(trajectory: pd.DataFrame, threshold: float, metric: str = "nc1", layer: str = "penultimate",
                      by="recipe", *, scorer: str | None = None, ood: str | None = None, above: bool = False,
                      fmt: str = "table", per_run: bool = False, digits: int = 3) -> str:
    """The text of the comparison (``fmt``: table, markdown or csv, as :func:`~ncprobe.report.tables.render`):
    one line per recipe with the summary, or one per run with ``per_run=True``, under a title line
    that states the question."""
    runs = first_epoch_below(trajectory, threshold, metric, layer, by, scorer=scorer, ood=ood, above=above)
    table = runs if per_run else summarize_first_epoch(runs, by)
    what = metric if scorer is None else f"{metric} of {scorer}" + (f" vs {ood}" if ood else "")
    title = f"first epoch with {what} at {layer} {'>' if above else '<'} {threshold:g}"
    if table.empty:
        return f"{title}: no {what} rows at {layer}"
    return title + "\n" + render(table, fmt, digits=digits)


__all__ = ["RUN_COLUMNS", "SUMMARY_COLUMNS", "first_epoch_below", "first_epoch_table", "summarize_first_epoch"]
