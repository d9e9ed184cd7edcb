"""Ranking checkpoints x scorers from the long-format ``ood.csv`` (and ``collapse.csv`` beside it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import NcprobeError

REQUIRED = {"run_id", "checkpoint", "ood", "layer", "scorer", "auroc", "fpr95"}


def read_ood_csv(path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "ood.csv"
    if not path.exists():
        raise NcprobeError(f"{path} does not exist; pass the ood.csv written by `ncprobe layers --out DIR`")
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise NcprobeError(f"{path} is not a readable CSV ({type(exc).__name__}); pass an ood.csv from `ncprobe layers`") from exc
    missing = REQUIRED - set(df.columns)
    if missing:
        raise NcprobeError(f"{path} lacks the columns {', '.join(sorted(missing))}; pass an ood.csv from `ncprobe layers`")
    for col in ("group", "mode"):
        if col in df.columns:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    return df


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
    """Mean AUROC over OOD sets per run, then mean / std / worst over the runs of each group."""
    if scorers:
        unknown = set(scorers) - set(df["scorer"])
        if unknown:
            raise NcprobeError(f"no rows for scorer(s) {', '.join(sorted(unknown))}; present: {', '.join(dict.fromkeys(df['scorer']))}")
        df = df[df["scorer"].isin(scorers)]
    group_by = list(group_by) if group_by else ["checkpoint", "group"]
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
        pen = collapse[collapse["layer"] == "penultimate"].drop_duplicates("run_id").set_index("run_id")["nc1"]
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
