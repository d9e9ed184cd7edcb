"""`ncprobe collapse`: neural-collapse statistics for every probed layer."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import cache_note, checkpoint_options, ensure_writable_dir, note, run_options


@click.command(name="collapse")
@click.argument("checkpoints", metavar="CKPT...", nargs=-1, required=True)
@click.option("--data", required=True, metavar="SPEC",
              help="Labelled fit set, usually the training split: cifar10:train, train.npz, digits:train, ...")
@click.option("--layers", default=None, metavar="NAMES",
              help="Comma-separated probe points, or 'all' (default: the block groups, penultimate, logits).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Append one row per layer to DIR/collapse.csv (several CKPT: also DIR/trajectory.csv and a figure).")
@click.option("--group", default=None, help="Tag stored with the rows (e.g. a recipe name).")
@checkpoint_options
@run_options
def command(checkpoints, data, layers, out, group, checkpoint_options, run):
    """Per-layer NC1-NC4, NCC accuracy, Tr(Sw)/Tr(Sb) and CDNV of CKPT on a labelled set.

    Several CKPT (or a quoted glob, 'runs/m.epoch*.safetensors', expanded by ncprobe) make a
    trajectory: each checkpoint measured the same way, ordered by its stored epoch, NC1 per epoch
    and layer printed and, with --out, written to trajectory.csv with a figure of NC1 against epoch.

    \b
    NC1  within-class variability relative to between-class (Papyan et al. 2020); 0 = collapsed
    NC2  class means vs a simplex ETF: equinorm, equiangularity, ETF distance; 0 = ETF
    NC3  classifier vs class means (classifier input only); NC4: classifier vs nearest class mean
    """
    from ..api import collapse
    from ..jobs.inputs import expand_checkpoints
    from ..report.tables import render

    started = time.perf_counter()
    out_dir = ensure_writable_dir(out) if out is not None else None
    paths = expand_checkpoints(checkpoints)
    if len(paths) > 1:
        _trajectory(paths, data, layers, out_dir, group, checkpoint_options, run)
        click.echo(f"done in {time.perf_counter() - started:.1f}s")
        return
    checkpoint = paths[0]
    result = collapse(checkpoint, data, layers=layers, out=out_dir, checkpoint_options=checkpoint_options,
                      group=group, **run)
    if result is None:  # a distributed rank other than 0: rank 0 reports
        return
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


def _trajectory(paths, data, layers, out_dir, group, checkpoint_options, run) -> None:
    """Several checkpoints: one collapse trajectory, NC1 printed per epoch (rows) and layer (columns)."""
    from ..api import collapse_trajectory
    from ..report.tables import render

    result = collapse_trajectory(paths, data, layers=layers, out=out_dir, checkpoint_options=checkpoint_options,
                                 group=group, report=note, **run)
    if result is None:  # a distributed rank other than 0: rank 0 reports
        return
    rows = result.trajectory[result.trajectory["metric"] == "nc1"]
    layers_order = list(rows.sort_values("layer_index", kind="stable")["layer"].drop_duplicates())
    table = rows.pivot_table(index=["step", "checkpoint"], columns="layer", values="value", aggfunc="first")
    table = table.reindex(columns=layers_order).reset_index()
    table.insert(1, "epoch", [e if e is not None else "-" for e in result.epochs])
    table = table.drop(columns="step")
    click.echo(f"{len(result.checkpoints)} checkpoints on {data}: NC1 per layer")
    click.echo(render(table, digits=4))
    hit = cache_note(result.from_cache)
    if hit:
        click.echo(hit)
    if result.out is not None:
        click.echo(f"wrote {result.out / 'collapse.csv'} and {result.out / 'trajectory.csv'}")
    if result.plot_path is not None:
        click.echo(f"wrote {result.plot_path}")
