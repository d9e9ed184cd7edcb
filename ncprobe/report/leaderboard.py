"""Ranking checkpoints x scorers from the long-format ``ood.csv`` (and ``collapse.csv`` beside it)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import NcprobeError
from .csvlog import NA_STRINGS, TableError, os_error, parse_table, snapshot
from .schema import IDENTIFIER_COLUMNS

REQUIRED = {"run_id", "checkpoint", "ood", "layer", "scorer", "auroc", "fpr95"}
#: the columns a leaderboard averages: they must hold numbers
METRICS = ("auroc", "fpr95")
HINT = "pass the ood.csv written by `ncprobe layers --out DIR`"


def _warn(message: str) -> None:
    warnings.warn(" ".join(message.split()), stacklevel=3)


def _locate(path) -> Path:
    path = Path(path)
    return path / "ood.csv" if path.is_dir() else path


def read_ood_csv(path) -> pd.DataFrame:
    """The checked rows of an ``ood.csv`` (or of ``DIR/ood.csv``): see :func:`read_run_tables`."""
    return read_run_tables(path, collapse=False)[0]


def read_run_tables(path, *, collapse: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``ood.csv`` at ``path`` (a file, or a folder holding one) and, with ``collapse``, the
    ``collapse.csv`` beside it (None when absent or unusable, with a one-line warning), read together
    under the folder's lock so that both show the same runs.

    ``ood.csv`` problems are one-line :class:`~ncprobe.errors.NcprobeError` naming the file: absent,
    empty, not a CSV, columns missing, text in a number column. Rows with a NaN or infinite AUROC or
    FPR95 are not an error: their (run, scorer, layer) entries are left out with a warning that
    counts them. An OOD set listed twice in a run counts once (warning).
    """
    path = _locate(path)
    sibling = path.with_name("collapse.csv")
    names = [path.name] + ([sibling.name] if collapse and sibling.name != path.name else [])
    try:
        tables = snapshot(path.parent, names)
    except OSError as exc:
        raise os_error(path, exc, reading=True) from exc
    if tables[path.name] is None:
        raise TableError(f"{path} does not exist; {HINT}")
    ood = clean_ood(parse_table(tables[path.name], path, hint=HINT), str(path), first_line=2)
    coll = None
    if tables.get(sibling.name) is not None and sibling != path:
        coll = _clean_collapse(tables[sibling.name], sibling)
    return ood, coll


def _numbers(series: pd.Series, col: str, where: str, first_line: int | None) -> pd.Series:
    """``series`` as floats; text that is not a number (other than an empty / NA cell) is an error."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        text = series.astype(object).where(series.notna(), "").astype(str).str.strip()
        values = pd.to_numeric(text.where(~text.isin(NA_STRINGS), None), errors="coerce")
        bad = values.isna() & ~text.isin(NA_STRINGS)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            at = f"line {i + first_line}" if first_line is not None else f"row {i + 1}"
            raise TableError(f"{where}: column {col} holds text that is not a number ({text.iloc[i]!r} on {at}, "
                             f"{int(bad.sum())} such cell(s)); ncprobe writes numbers there, so the file is "
                             f"damaged or not from ncprobe; repair or delete those rows")
        return values.astype(float)
    return series.astype(float)


def clean_ood(df: pd.DataFrame, where: str = "the ood table", first_line: int | None = None) -> pd.DataFrame:
    """Check and tidy ood rows before ranking: required columns, numbers in the metric columns,
    identifier columns as text (NaN as empty); entries with a non-finite AUROC / FPR95 left out and
    an OOD set repeated within a run counted once, each with a one-line warning."""
    missing = REQUIRED - set(df.columns)
    if missing:
        raise TableError(f"{where} lacks the columns {', '.join(sorted(missing))}; {HINT}")
    if df.empty:
        raise TableError(f"{where} has no rows; {HINT}")
    df = df.reset_index(drop=True).copy()
    for col in df.columns:
        if col in IDENTIFIER_COLUMNS:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    for col in (*METRICS, "id_accuracy"):
        if col in df.columns:
            df[col] = _numbers(df[col], col, where, first_line)
    entry = ["run_id", "scorer", "layer"]
    values = df[list(METRICS)].to_numpy()
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1)).all(axis=1)  # rates live in [0, 1]
    if bad.any():
        bad_keys = df.loc[bad, entry].drop_duplicates()
        drop = df[entry].merge(bad_keys, how="left", indicator=True)["_merge"].eq("both").to_numpy()
        _warn(f"{where}: {int(bad.sum())} row(s) have a NaN, infinite or out-of-range (not in [0, 1]) auroc/fpr95; their {len(bad_keys)} "
              f"(run, scorer, layer) entries ({int(drop.sum())} rows) are left out of the leaderboard, since a "
              f"mean over fewer OOD sets would not compare with the others")
        df = df[~drop].reset_index(drop=True)
        if df.empty:
            raise TableError(f"{where}: no row has a finite auroc and fpr95; rerun `ncprobe layers` on usable data")
    dup = df.duplicated(entry + ["ood"], keep="first")
    if dup.any():
        repeated = df.loc[dup, ["run_id", "ood"]].drop_duplicates()
        example = repeated.iloc[0]
        first_rows = df[df.duplicated(entry + ["ood"], keep=False)]
        differ = (first_rows.groupby(entry + ["ood"])["auroc"].nunique() > 1).any()
        _warn(f"{where}: {len(repeated)} OOD set(s) are listed more than once within a run (e.g. {example['ood']!r} "
              f"in run {example['run_id']}); each counts once in the means (its first row is kept)"
              + ("; their AUROCs differ, so two different sets may share one name" if differ else ""))
        df = df[~dup].reset_index(drop=True)
    return df


def _clean_collapse(data: bytes, path: Path) -> pd.DataFrame | None:
    """The collapse.csv beside an ood.csv, or None (warning) when it cannot give NC1 per run."""
    try:
        coll = parse_table(data, path, hint="NC1 is left out of the leaderboard")
    except TableError as exc:
        _warn(str(exc))
        return None
    missing = {"run_id", "layer", "nc1"} - set(coll.columns)
    if missing:
        _warn(f"{path} lacks the columns {', '.join(sorted(missing))}; NC1 is left out of the leaderboard")
        return None
    try:
        coll["nc1"] = _numbers(coll["nc1"], "nc1", str(path), 2)
    except TableError as exc:
        _warn(f"{exc}; NC1 is left out of the leaderboard")
        return None
    return coll


def choose_layer(df: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Keep, per (run, scorer), the rows of one layer: ``best`` (highest mean AUROC), ``penultimate`` or a name.

    Logit scorers only exist at ``logits`` and keep that layer whatever is asked.
    """
    mean = df.groupby(["run_id", "scorer", "layer"], sort=False)["auroc"].mean().reset_index()
    if layer == "best":
        idx = mean.groupby(["run_id", "scorer"], sort=False)["auroc"].idxmax()
        keep = mean.loc[idx, ["run_id", "scorer", "layer"]]
    else:
        at_logits = mean.groupby(["run_id", "scorer"])["layer"].transform(lambda s: (s == "logits").all())
        keep = mean[(mean["layer"] == layer) | at_logits][["run_id", "scorer", "layer"]]
        if keep.empty or not (mean["layer"] == layer).any():
            known = ", ".join(dict.fromkeys(df["layer"]))
            raise NcprobeError(f"no rows for layer {layer!r}; use best, penultimate or one of: {known}")
    return df.merge(keep, on=["run_id", "scorer", "layer"])


def leaderboard(df: pd.DataFrame, *, layer: str = "best", scorers=None, group_by=None,
                collapse: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean AUROC over OOD sets per run, then mean / std / worst over the runs of each group.

    ``df`` is checked and tidied by :func:`clean_ood` first (a no-op for rows from :func:`read_ood_csv`).
    """
    df = clean_ood(df)
    if scorers:
        unknown = set(scorers) - set(df["scorer"])
        if unknown:
            raise NcprobeError(f"no rows for scorer(s) {', '.join(sorted(unknown))}; present: {', '.join(dict.fromkeys(df['scorer']))}")
        df = df[df["scorer"].isin(scorers)]
    group_by = list(dict.fromkeys(group_by)) if group_by else ["checkpoint", "group"]
    measured = [g for g in group_by if g in (*METRICS, "id_accuracy", "layer", "layer_index", "aupr_in", "aupr_out",
                                             "aupr_in_trapz", "aupr_out_trapz", "fpr95_oodpos", "dim")]
    if measured:
        raise NcprobeError(f"cannot group by {', '.join(measured)}: it is a measured value or the chosen layer, not "
                           "a label of runs; group by checkpoint, group, arch, mode, params, ...")
    bad = [g for g in group_by if g not in df.columns]
    if bad:
        raise NcprobeError(f"cannot group by {', '.join(bad)}: not a column of ood.csv (columns: {', '.join(df.columns)})")
    chosen = choose_layer(df, layer)
    if "params" in chosen.columns and "params" not in group_by:
        group_by.append("params")  # a scorer run with other hyper-parameters is another entry, never pooled
    extra = {c: (c, "first") for c in group_by if c not in ("run_id", "scorer")}
    per_run = chosen.groupby(["run_id", "scorer"], sort=False).agg(
        layer=("layer", "first"), auroc=("auroc", "mean"), fpr95=("fpr95", "mean"),
        id_accuracy=("id_accuracy", "first") if "id_accuracy" in chosen else ("auroc", "size"), **extra,
    ).reset_index()
    if "id_accuracy" not in chosen:
        per_run["id_accuracy"] = float("nan")
    if collapse is not None and {"run_id", "layer", "nc1"} <= set(collapse.columns):
        coll = collapse.assign(run_id=collapse["run_id"].astype(object).where(collapse["run_id"].notna(), "").astype(str),
                               layer=collapse["layer"].astype(object).where(collapse["layer"].notna(), "").astype(str),
                               nc1=pd.to_numeric(collapse["nc1"], errors="coerce"))
        pen = coll[coll["layer"] == "penultimate"].drop_duplicates("run_id").set_index("run_id")["nc1"]
        per_run["nc1_penultimate"] = per_run["run_id"].map(pen)
    keys = [g for g in group_by if g != "scorer"] + ["scorer"]
    agg = {
        "runs": ("run_id", "nunique"),
        "layer": ("layer", lambda s: s.mode().iloc[0] if len(s.mode()) == 1 else "mixed"),
        "auroc_mean": ("auroc", "mean"),
        "auroc_std": ("auroc", "std"),
        "auroc_worst": ("auroc", "min"),
        "fpr95_mean": ("fpr95", "mean"),
        "id_accuracy": ("id_accuracy", "mean"),
    }
    if "nc1_penultimate" in per_run:
        agg["nc1_penultimate"] = ("nc1_penultimate", "mean")
    board = per_run.groupby(keys, sort=False, dropna=False).agg(**agg).reset_index()
    board = board.sort_values("auroc_mean", ascending=False, kind="stable").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


COLUMN_NOTES = {
    "rank": "order by mean AUROC (1 = best)",
    "runs": "number of runs (e.g. seeds) in the group",
    "layer": "layer whose scores are shown (best = highest mean AUROC per run)",
    "auroc_mean": "AUROC averaged over OOD sets, then over runs (1 = perfect, 0.5 = chance)",
    "auroc_std": "standard deviation of that AUROC across runs",
    "auroc_worst": "worst run's AUROC (the L2 paper's worst-case view)",
    "fpr95_mean": "OOD accepted when 95% of ID is kept (lower = better)",
    "id_accuracy": "top-1 accuracy on the ID set",
    "nc1_penultimate": "NC1 at the classifier input (lower = more collapsed)",
}


def legend(columns) -> str:
    return "\n".join(f"  {c:<16} {COLUMN_NOTES[c]}" for c in columns if c in COLUMN_NOTES)
