"""`ncprobe collapse`: neural-collapse statistics for every probed layer."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import cache_note, checkpoint_options, ensure_writable_dir, run_options


@click.command(name="collapse")
@click.argument("checkpoint", metavar="CKPT")
@click.option("--data", required=True, metavar="SPEC",
              help="Labelled fit set, usually the training split: cifar10:train, train.npz, digits:train, ...")
@click.option("--layers", default=None, metavar="NAMES",
              help="Comma-separated probe points, or 'all' (default: the block groups, penultimate, logits).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Append one row per layer to DIR/collapse.csv.")
@click.option("--group", default=None, help="Tag stored with the rows (e.g. a recipe name).")
@checkpoint_options
@run_options
def command(checkpoint, data, layers, out, group, checkpoint_options, run):
    """Per-layer NC1-NC4, NCC accuracy, Tr(Sw)/Tr(Sb) and CDNV of CKPT on a labelled set.

    \b
    NC1  within-class variability relative to between-class (Papyan et al. 2020); 0 = collapsed
    NC2  class means vs a simplex ETF: equinorm, equiangularity, ETF distance; 0 = ETF
    NC3  classifier vs class means (classifier input only); NC4: classifier vs nearest class mean
    """
    from ..api import collapse
    from ..report.tables import render

    started = time.perf_counter()
    out_dir = ensure_writable_dir(out) if out is not None else None
    result = collapse(checkpoint, data, layers=layers, out=out_dir, checkpoint_options=checkpoint_options,
                      group=group, **run)
    table = result.collapse[["layer", "dim", "n", "classes", "nc1", "nc2_etf", "nc2_equiangular", "ncc_acc", "nc3",
                             "nc4", "tr_ratio", "cdnv"]]
    ckpt = result.checkpoint
    click.echo(f"{ckpt.name}  ({ckpt.arch}, {ckpt.num_classes} classes)  on {data}")
    for line in result.notes:
        click.echo(line)
    click.echo(render(table, digits=4))
    note = cache_note(result.from_cache)
    if note:
        click.echo(note)
    if out_dir is not None:
        click.echo(f"wrote {out_dir / 'collapse.csv'}")
    click.echo(f"done in {time.perf_counter() - started:.1f}s")
