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


#: run labels that older ood.csv files may lack; a missing one reads as '' (not tagged / unknown)
RUN_LABELS = ("timestamp", "checkpoint_sha256", "group", "recipe", "id", "fit", "params", "ood_group", "seed", "mean",
              "std")
#: what makes two runs of one scorer the same measurement (besides the leaderboard's own group keys)
RERUN_KEYS = ("_ident", "id", "fit", "ood_sets", "scorer", "params", "seed", "mean", "std")
#: the per-set columns of ``leaderboard(..., per_set=True)`` are named ``auroc[<set>]``
PER_SET = "auroc[{}]"
_PER_SET_PREFIX = PER_SET.split("{")[0]


def with_run_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every column of :data:`RUN_LABELS` present, the missing ones as ''."""
    missing = [c for c in RUN_LABELS if c not in df.columns]
    return df.assign(**dict.fromkeys(missing, "")) if missing else df


def _set_list(oods: pd.Series) -> str:
    """The OOD sets a mean covers, as one sorted, comma-separated text (order-free, so comparable)."""
    return ", ".join(sorted(dict.fromkeys(oods)))


def per_run_means(chosen: pd.DataFrame, keep=(), *, near_far: bool = False, per_set: bool = False) -> pd.DataFrame:
    """One row per (run, scorer) of rows already cut to one layer each (:func:`choose_layer`).

    ``auroc`` / ``fpr95`` are means over the run's OOD sets, ``ood_sets`` names those sets, ``_ident``
    is the checkpoint's sha256 (its name when the hash is unknown); ``keep`` columns are carried
    along (first value). With ``near_far``: ``auroc_near`` / ``auroc_far`` / ``fpr95_near`` /
    ``fpr95_far``, means over the sets whose ``ood_group`` is near resp. far (NaN when it has none),
    and their counts ``n_near`` / ``n_far``. With ``per_set``: ``auroc[<set>]`` for every set.
    """
    by = ["run_id", "scorer"]
    groups = chosen.groupby(by, sort=False)
    extra = {c: (c, "first") for c in dict.fromkeys(keep) if c not in by}
    out = groups.agg(layer=("layer", "first"), auroc=("auroc", "mean"), fpr95=("fpr95", "mean"),
                     ood_sets=("ood", _set_list), **extra)
    out["id_accuracy"] = groups["id_accuracy"].first() if "id_accuracy" in chosen else float("nan")
    sha, name = groups["checkpoint_sha256"].first(), groups["checkpoint"].first()
    out["_ident"] = sha.where(sha != "", "name:" + name)
    if near_far:
        subs = {part: chosen[chosen["ood_group"] == part].groupby(by, sort=False) for part in ("near", "far")}
        for metric in ("auroc", "fpr95"):
            for part, sub in subs.items():
                out[f"{metric}_{part}"] = sub[metric].mean().reindex(out.index)
        for part, sub in subs.items():
            out[f"n_{part}"] = sub["ood"].nunique().reindex(out.index).fillna(0).astype(int)
    if per_set:
        wide = chosen.groupby([*by, "ood"], sort=False)["auroc"].mean().unstack("ood").reindex(out.index)
        for name in dict.fromkeys(chosen["ood"]):
            out[PER_SET.format(name)] = wide[name]
    return out.reset_index()


def _few(items, k: int = 4) -> str:
    """Up to ``k`` items as text, then how many more."""
    items = list(dict.fromkeys(items))
    text = ", ".join(str(i) for i in items[:k])
    return text + (f" and {len(items) - k} more" if len(items) > k else "")


def _where(keys: list[str], values) -> str:
    """The group a note speaks of, by its key values (scorer and params left out: notes name scorers apart)."""
    labels = [f"{k} {v!r}" for k, v in zip(keys, values, strict=True) if k not in ("scorer", "params")]
    return ", ".join(labels) if labels else "the runs"


def _drop_reruns(per_run: pd.DataFrame, keys: list[str], notes: list) -> pd.DataFrame:
    """Identical reruns inside one group (same checkpoint, ID and fit sets, OOD sets, scorer, params)
    count once: the latest (by timestamp, then run id) is kept and a note says so."""
    same = list(dict.fromkeys([*keys, *RERUN_KEYS]))
    order = per_run.sort_values(["timestamp", "run_id"], kind="stable")
    repeated = order.duplicated(same, keep=False)
    for _, part in order[repeated].groupby(same, sort=False, dropna=False):
        runs = part["run_id"].tolist()
        notes.append((f"identical reruns counted once: {part['checkpoint'].iloc[-1]} was run {len(runs)} times "
                      f"({_few(runs)}) with the same checkpoint sha256, ID and fit sets, OOD sets, scorer and "
                      f"params; only the latest, {runs[-1]}, is kept", part["scorer"].iloc[0]))
    return order[~order.duplicated(same, keep="last")].sort_index()


def _may_pool(part: pd.DataFrame) -> bool:
    """Runs of different checkpoints pool only under one --group tag or one training recipe."""
    for col in ("group", "recipe"):
        values = set(part[col])
        if len(values) == 1 and "" not in values:
            return True
    return False


def _split_checkpoints(per_run: pd.DataFrame, keys: list[str], notes: list) -> pd.DataFrame:
    """Mark (column ``_split``) the groups holding several checkpoints that may not be pooled, so
    that each checkpoint gets its own row; a note per group says why."""
    per_run = per_run.assign(_split="")
    for values, part in per_run.groupby(keys, sort=False, dropna=False):
        if part["_ident"].nunique() < 2 or _may_pool(part):
            continue
        per_run.loc[part.index, "_split"] = part["_ident"]
        names = part.drop_duplicates("_ident").apply(_checkpoint_label, axis=1)
        notes.append((f"not pooled: {_where(keys, values)} holds {len(names)} different checkpoints "
                      f"({_few(names)}) with no shared --group tag or training recipe, so each has its own row; "
                      f"tag their runs with `ncprobe layers --group NAME` to pool them", part["scorer"].iloc[0]))
    return per_run


def _checkpoint_label(row) -> str:
    """A checkpoint's name with the start of its hash (two files of one name may differ)."""
    sha = row["checkpoint_sha256"]
    return f"{row['checkpoint']}@{sha[:8]}" if sha else row["checkpoint"]


def _note_set_lists(per_run: pd.DataFrame, keys: list[str], notes: list) -> None:
    """A note for every group whose runs cover different OOD sets (they get one row per set list)."""
    for values, part in per_run.groupby([*keys, "_split"], sort=False, dropna=False):
        lists = part.groupby("ood_sets", sort=False)["run_id"].agg(list)
        if len(lists) < 2:
            continue
        if values[-1]:  # a checkpoint split from its group: name it, hash included
            named = [(k, v) for k, v in zip(keys, values[:-1], strict=True) if k != "checkpoint"]
            where = _where([k for k, _ in named], [v for _, v in named])
            where = ("" if where == "the runs" else where + ", ") + f"checkpoint {_checkpoint_label(part.iloc[0])}"
        else:
            where = _where(keys, values[:-1])
        covers = "; ".join(f"[{sets}] in {_few(runs, 2)}" for sets, runs in lists.items())
        notes.append((f"not pooled: {where} has runs on different OOD sets ({covers}), so each set list has its "
                      "own row (column ood_sets)", part["scorer"].iloc[0]))


def _merge_notes(notes: list, scorers) -> list[str]:
    """One line per distinct note, naming its scorers unless it holds for all of them."""
    by_text: dict[str, list] = {}
    for text, scorer in notes:
        by_text.setdefault(text, []).append(scorer)
    every = set(scorers)
    return [text if set(found) >= every else f"{text} (scorer {_few(found, 6)})" for text, found in by_text.items()]


def _label_split_rows(board: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """When a group was split by checkpoint, a column telling its rows apart: ``checkpoint`` (or,
    when that is already a key, ``checkpoint_sha256``) with the one checkpoint of each row, or how
    many checkpoints a pooled row holds."""
    col = "checkpoint" if "checkpoint" not in keys else "checkpoint_sha256"
    one = board["_names"].map(len) == 1
    if col == "checkpoint":
        label = board["_names"].map(lambda n: n[0])
        clash = board["_split"].ne("") & board.assign(_label=label).duplicated([*keys, "_label", "ood_sets"], keep=False)
        label = label.where(~clash | board["_sha"].eq(""), label + "@" + board["_sha"].str[:8])
    else:
        label = board["_sha"].str[:12]
    label = label.where(one & board["_idents"].eq(1), board["_idents"].astype(str) + " checkpoints")
    board.insert(list(board.columns).index("scorer"), col, label)
    return board


def leaderboard(df: pd.DataFrame, *, layer: str = "best", scorers=None, group_by=None,
                collapse: pd.DataFrame | None = None, per_set: bool = False) -> pd.DataFrame:
    """Mean AUROC over OOD sets per run, then mean / std / worst over the runs of each group.

    ``df`` is checked and tidied by :func:`clean_ood` first (a no-op for rows from :func:`read_ood_csv`).
    Never pooled silently: identical reruns (same checkpoint sha256, ID and fit sets, OOD sets, scorer
    and params) count once (the latest is kept); runs of different checkpoints share a row only under
    one non-empty ``group`` tag or one non-empty ``recipe``, else each checkpoint has its own row;
    runs on different OOD sets get one row per set list (column ``ood_sets``). Each such case is a
    line of ``board.attrs["notes"]``. When rows carry an ``ood_group``, the board has
    ``auroc_near`` / ``auroc_far`` / ``fpr95_near`` / ``fpr95_far`` (per run the mean over that
    group's sets, then the mean over runs); ``per_set`` adds one ``auroc[<set>]`` column per OOD set.
    """
    df = clean_ood(df)
    had_params = "params" in df.columns
    df = with_run_labels(df)
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
    if had_params and "params" not in group_by:
        group_by.append("params")  # a scorer run with other hyper-parameters is another entry, never pooled
    near_far = bool(chosen["ood_group"].isin(["near", "far"]).any())
    keep = [c for c in group_by if c not in ("run_id", "scorer")] + ["checkpoint", *RUN_LABELS]
    per_run = per_run_means(chosen, keep, near_far=near_far, per_set=per_set)
    if collapse is not None and {"run_id", "layer", "nc1"} <= set(collapse.columns):
        coll = collapse.assign(run_id=collapse["run_id"].astype(object).where(collapse["run_id"].notna(), "").astype(str),
                               layer=collapse["layer"].astype(object).where(collapse["layer"].notna(), "").astype(str),
                               nc1=pd.to_numeric(collapse["nc1"], errors="coerce"))
        pen = coll[coll["layer"] == "penultimate"].drop_duplicates("run_id").set_index("run_id")["nc1"]
        per_run["nc1_penultimate"] = per_run["run_id"].map(pen)
    keys = [g for g in group_by if g != "scorer"] + ["scorer"]
    notes: list = []
    per_run = _drop_reruns(per_run, keys, notes)
    per_run = _split_checkpoints(per_run, keys, notes)
    _note_set_lists(per_run, keys, notes)
    agg = {
        "runs": ("run_id", "nunique"),
        "layer": ("layer", lambda s: s.mode().iloc[0] if len(s.mode()) == 1 else "mixed"),
        "auroc_mean": ("auroc", "mean"),
        "auroc_std": ("auroc", "std"),
        "auroc_worst": ("auroc", "min"),
        "fpr95_mean": ("fpr95", "mean"),
    }
    measured_cols = [c for c in per_run.columns if c.startswith(("auroc_near", "auroc_far", "fpr95_near", "fpr95_far"))]
    measured_cols += [c for c in per_run.columns if c.startswith(_PER_SET_PREFIX)]
    agg.update({c: (c, "mean") for c in measured_cols})
    agg["id_accuracy"] = ("id_accuracy", "mean")
    if "nc1_penultimate" in per_run:
        agg["nc1_penultimate"] = ("nc1_penultimate", "mean")
    agg.update(_names=("_name", lambda s: tuple(dict.fromkeys(s))), _idents=("_ident", "nunique"),
               _sha=("_sha256", "first"))
    per_run = per_run.assign(_name=per_run["checkpoint"], _sha256=per_run["checkpoint_sha256"])  # may be keys
    board = per_run.groupby([*keys, "_split", "ood_sets"], sort=False, dropna=False).agg(**agg).reset_index()
    if board["_split"].ne("").any():
        board = _label_split_rows(board, keys)
    sets = board.pop("ood_sets")
    board.insert(list(board.columns).index("auroc_mean"), "ood_sets", sets)
    board = board.drop(columns=["_split", "_names", "_idents", "_sha"])
    board = board.sort_values("auroc_mean", ascending=False, kind="stable").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    board.attrs["notes"] = _merge_notes(notes, board["scorer"].unique())
    return board


def near_far_table(df: pd.DataFrame, layers=("best", "penultimate")) -> pd.DataFrame:
    """OpenOOD v1.5's leaderboard shape: per run (``run_id``, ``checkpoint``) x scorer x layer choice,
    the ``layer`` used, ``auroc_near`` / ``auroc_far`` / ``fpr95_near`` / ``fpr95_far`` (each the
    plain mean over the OOD sets whose ``ood_group`` is near resp. far, as OpenOOD averages a group's
    sets; NaN when the run has none, with the counts ``n_near`` / ``n_far``), ``auroc_mean`` /
    ``fpr95_mean`` over all of the run's OOD sets, and ``id_accuracy``. Runs are never pooled.

    ``layers`` are layer choices: ``best`` is, per run and scorer, the layer with the highest mean
    AUROC over all the OOD sets in ``df`` -- it is picked on the test OOD sets themselves, so it is
    an optimistic (oracle) choice, not a held-out one; ``penultimate`` is the classifier input; any
    other value names a layer. Logit scorers stay at ``logits`` whatever is asked. A pure function of
    the ood rows (checked by :func:`clean_ood`).
    """
    if isinstance(layers, str):
        layers = (layers,)
    if not layers:
        raise NcprobeError("near_far_table needs at least one layer choice; pass e.g. ('best', 'penultimate')")
    df = clean_ood(df)
    had_params = "params" in df.columns
    df = with_run_labels(df)
    keep = ["checkpoint", "params"] if had_params else ["checkpoint"]
    parts = []
    for choice in dict.fromkeys(layers):
        chosen = df if df["layer"].eq("logits").all() else choose_layer(df, choice)
        per = per_run_means(chosen, keep, near_far=True)
        per.insert(list(per.columns).index("layer"), "layer_choice", choice)
        parts.append(per)
    table = pd.concat(parts, ignore_index=True)
    columns = ["run_id", "checkpoint", "scorer", *(["params"] if had_params else []), "layer_choice", "layer",
               "auroc_near", "auroc_far", "fpr95_near", "fpr95_far", "auroc_mean", "fpr95_mean", "n_near", "n_far",
               "id_accuracy"]
    return table.rename(columns={"auroc": "auroc_mean", "fpr95": "fpr95_mean"})[columns]


COLUMN_NOTES = {
    "rank": "order by mean AUROC (1 = best)",
    "checkpoint": "the checkpoint of a row split from its group (N checkpoints = pooled)",
    "checkpoint_sha256": "start of the sha256 of a row split from its group (two files of one name)",
    "runs": "number of runs (e.g. seeds) in the group; identical reruns count once",
    "layer": "layer whose scores are shown (best = highest mean AUROC per run)",
    "ood_sets": "the OOD sets each mean covers",
    "auroc_mean": "AUROC averaged over OOD sets, then over runs (1 = perfect, 0.5 = chance)",
    "auroc_std": "standard deviation of that AUROC across runs",
    "auroc_worst": "worst run's AUROC (the L2 paper's worst-case view)",
    "fpr95_mean": "OOD accepted when 95% of ID is kept (lower = better)",
    "auroc_near": "AUROC averaged over the near-OOD sets, then over runs",
    "auroc_far": "AUROC averaged over the far-OOD sets, then over runs",
    "fpr95_near": "FPR95 averaged over the near-OOD sets, then over runs",
    "fpr95_far": "FPR95 averaged over the far-OOD sets, then over runs",
    PER_SET.format("SET"): "AUROC on that one OOD set, averaged over runs",
    "id_accuracy": "top-1 accuracy on the ID set",
    "nc1_penultimate": "NC1 at the classifier input (lower = more collapsed)",
}


def legend(columns) -> str:
    """One line per known column (all ``auroc[<set>]`` columns share one line)."""
    names = [PER_SET.format("SET") if str(c).startswith(_PER_SET_PREFIX) else c for c in columns]
    return "\n".join(f"  {c:<16} {COLUMN_NOTES[c]}" for c in dict.fromkeys(names) if c in COLUMN_NOTES)
