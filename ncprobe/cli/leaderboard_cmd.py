"""`ncprobe leaderboard`: rank checkpoints x scorers from an ood.csv."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="leaderboard")
@click.argument("csv", metavar="OOD_CSV", type=click.Path(path_type=Path))
@click.option("--layer", default="best", show_default=True, metavar="best|penultimate|NAME",
              help="Which layer's scores rank a run: its best layer per scorer, the classifier input, or a name.")
@click.option("--scorer", "scorers", multiple=True, metavar="NAME", help="Only these scorers (repeatable).")
@click.option("--group-by", default="checkpoint,group", show_default=True, metavar="COLS",
              help="Columns whose runs are pooled (mean, std, worst case), e.g. group, mode, arch.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv"]), default="table", show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=None, help="Show only the first N rows.")
@click.option("--per-set", is_flag=True, help="One AUROC column per OOD set, auroc[SET], beside the means.")
def command(csv, layer, scorers, group_by, fmt, top, per_set):
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
