"""`ncprobe leaderboard`: rank checkpoints x scorers from an ood.csv."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="leaderboard")
@click.argument("csv", metavar="OOD_CSV|TRAJECTORY_CSV", type=click.Path(path_type=Path))
@click.option("--layer", default="best", show_default=True, metavar="best|penultimate|NAME",
              help="Which layer's scores rank a run: its best layer per scorer, the classifier input, or a name.")
@click.option("--scorer", "scorers", multiple=True, metavar="NAME", help="Only these scorers (repeatable).")
@click.option("--group-by", default="checkpoint,group", show_default=True, metavar="COLS",
              help="Columns whose runs are pooled (mean, std, worst case), e.g. group, mode, arch.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv"]), default="table", show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=None, help="Show only the first N rows.")
@click.option("--per-set", is_flag=True, help="One AUROC column per OOD set, auroc[SET], beside the means.")
@click.option("--below", type=float, default=None, metavar="VALUE",
              help="Compare training curves (a trajectory.csv from finetune --track or collapse CKPT...): the first "
                   "epoch at which --metric at --layer drops below VALUE, per recipe (mean, std over seeds).")
@click.option("--metric", default="nc1", show_default=True, help="With --below: the trajectory's metric (nc1, nc2_etf, ...).")
@click.option("--by", "curve_by", default="recipe", show_default=True, metavar="COLS",
              help="With --below: the columns that name a curve family, e.g. recipe, group or mode.")
def command(csv, layer, scorers, group_by, fmt, top, per_set, below, metric, curve_by):
    """Rank checkpoints x scorers by AUROC averaged over the OOD sets.

    Runs tagged with the same --group (e.g. seeds of one recipe) are pooled: mean, std and the
    worst case across runs, as the L2-normalization paper reports. Nothing else is pooled silently:
    identical reruns count once, different checkpoints share a row only under one --group tag or
    one training recipe, runs on different OOD sets get a row per set list; each case is a `note:`
    line. Rows labelled near/far (benchmark presets) add near and far columns. NC1 at the classifier
    input comes from the collapse.csv beside OOD_CSV when present. Rows with a NaN or infinite AUROC
    are left out (with a warning), and an OOD set listed twice in a run counts once.
    """
    from ..report.leaderboard import leaderboard, legend, read_run_tables
    from ..report.tables import render

    if below is not None or _is_trajectory(csv):
        _curves(csv, below, metric, "penultimate" if layer == "best" else layer, curve_by, fmt)
        return

    # ood.csv and the collapse.csv beside it, read together under the folder's lock; problems with
    # ood.csv are one-line errors, a collapse.csv that cannot give NC1 is a one-line warning
    df, collapse = read_run_tables(csv)
    keys = [k.strip() for k in group_by.split(",") if k.strip()]
    board = leaderboard(df, layer=layer, scorers=list(scorers), group_by=keys, collapse=collapse, per_set=per_set)
    notes = list(board.attrs.get("notes", []))
    if top:
        board = board.head(top)
    shared = None
    if fmt == "table" and board["ood_sets"].nunique() == 1:  # one set list for every row: say it once
        shared = board["ood_sets"].iloc[0]
        board = board.drop(columns=["ood_sets"])
    click.echo(render(board, fmt))
    # notes are one line each; beside a csv or markdown table they go to stderr, so stdout stays a table
    for note in notes:
        click.echo(f"note: {note}", err=fmt != "table")
    if fmt == "table":
        click.echo("")
        if shared is not None:
            click.echo(f"  {'OOD sets':<16} every mean covers: {shared}")
        click.echo(legend(board.columns))


def _is_trajectory(path: Path) -> bool:
    if path.is_dir():
        return (path / "trajectory.csv").exists() and not (path / "ood.csv").exists()
    return path.name == "trajectory.csv" or path.name.endswith(".trajectory.csv")


def _curves(path: Path, below, metric: str, layer: str, by: str, fmt: str) -> None:
    """The first epoch at which each recipe's curve crosses ``below`` (a trajectory.csv)."""
    from ..errors import NcprobeError
    from ..report.csvlog import read_table
    from ..report.trajectory import first_epoch_table

    path = path / "trajectory.csv" if path.is_dir() else path
    if below is None:
        raise NcprobeError(f"{path} is a trajectory table; give --below VALUE (e.g. --below 0.5) to compare the "
                           "epochs at which each recipe's curve gets there")
    table = read_table(path, hint="pass the trajectory.csv of `ncprobe finetune --track` or of "
                                  "`ncprobe collapse CKPT...`")
    missing = {"epoch", "layer", "metric", "value", "run_id"} - set(table.columns)
    if missing:
        raise NcprobeError(f"{path} lacks the columns {', '.join(sorted(missing))}; --below needs a trajectory.csv "
                           "(from finetune --track or collapse CKPT...)")
    keys = [k.strip() for k in by.split(",") if k.strip()]
    unknown = [k for k in keys if k not in table.columns]
    if unknown:
        raise NcprobeError(f"--by {', '.join(unknown)}: not a column of {path} ({', '.join(table.columns)})")
    click.echo(first_epoch_table(table, below, metric=metric, layer=layer, by=keys, fmt=fmt))
