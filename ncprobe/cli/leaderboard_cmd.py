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
def command(csv, layer, scorers, group_by, fmt, top):
    """Rank checkpoints x scorers by AUROC averaged over the OOD sets.

    Runs tagged with the same --group (e.g. seeds of one recipe) are pooled: mean, std and the
    worst case across runs, as the L2-normalization paper reports. NC1 at the classifier input
    comes from the collapse.csv beside OOD_CSV when present. Rows with a NaN or infinite AUROC are
    left out (with a warning), and an OOD set listed twice in a run counts once.
    """
    from ..report.leaderboard import leaderboard, legend, read_run_tables
    from ..report.tables import render

    # ood.csv and the collapse.csv beside it, read together under the folder's lock; problems with
    # ood.csv are one-line errors, a collapse.csv that cannot give NC1 is a one-line warning
    df, collapse = read_run_tables(csv)
    keys = [k.strip() for k in group_by.split(",") if k.strip()]
    board = leaderboard(df, layer=layer, scorers=list(scorers), group_by=keys, collapse=collapse)
    if top:
        board = board.head(top)
    click.echo(render(board, fmt))
    if fmt == "table":
        click.echo("")
        click.echo(legend(board.columns))
