"""`ncprobe eval`: top-1 accuracy on a labelled dataset."""

from __future__ import annotations

import click

from .options import checkpoint_options, run_options


@click.command(name="eval")
@click.argument("checkpoint", metavar="CKPT")
@click.option("--data", required=True, metavar="SPEC",
              help="Labelled dataset: cifar10[:test], path/to/set.npz, an image folder, digits, ...")
@checkpoint_options
@run_options
def command(checkpoint, data, checkpoint_options, run):
    """Top-1 accuracy of CKPT on a labelled dataset (prints `accuracy: 0.XXXX`)."""
    from ..api import evaluate

    notes: list[str] = []
    acc = evaluate(checkpoint, data, checkpoint_options=checkpoint_options, report=notes.append, **run)
    if acc is None:  # a distributed rank other than 0: rank 0 reports
        return
    for line in notes:  # after success only: an error stays the one line on stderr
        click.echo(line, err=True)
    click.echo(f"accuracy: {acc:.4f}")
