"""`ncprobe bench`: a standard OOD benchmark (OpenOOD v1.5, DDU) for one or more checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import (
    checkpoint_options,
    ensure_writable_dir,
    run_options,
    scorers_option,
)


def _presets_help() -> str:
    from ..jobs.presets import load_presets

    try:
        presets = load_presets()
    except Exception as exc:  # noqa: BLE001 - help must render even with a broken presets file
        return f"(presets unavailable: {exc})"
    return "\n".join(f"  {name:<20} {p.title}" for name, p in presets.items())


class _BenchCommand(click.Command):
    """Lists the presets (read from the package's YAML) below the options."""

    def format_epilog(self, ctx, formatter):
        formatter.write_paragraph()
        formatter.write_text("\b\nPresets (ncprobe/benchmarks.yaml; override with $NCPROBE_BENCHMARKS):\n"
                             + _presets_help())


@click.command(name="bench", cls=_BenchCommand)
@click.argument("preset", metavar="PRESET")
@click.argument("checkpoints", metavar="CKPT...", nargs=-1, required=True)
@click.option("--set", "sets", multiple=True, metavar="NAME=SPEC",
              help="Point one of the preset's sets elsewhere, e.g. --set svhn=data/svhn.npz; repeatable.")
@click.option("--full-spectrum", is_flag=True,
              help="Count the preset's covariate-shifted ID sets (e.g. CIFAR-10-C) as ID (full-spectrum detection).")
@click.option("--tune", is_flag=True,
              help="Choose each tunable scorer's hyper-parameters on the preset's validation OOD sets (OpenOOD's protocol).")
@scorers_option
@click.option("--layers", default=None, metavar="NAMES",
              help="Comma-separated probe points, or 'all' (default: the block groups, penultimate, logits).")
@click.option("--scorer-param", "scorer_params", multiple=True, metavar="NAME.PARAM=VALUE",
              help="A scorer's hyper-parameter, e.g. knn.k=10; repeatable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("ncprobe-runs"), show_default=True,
              metavar="DIR", help="Append rows to DIR/ood.csv, DIR/collapse.csv and DIR/bench.csv.")
@click.option("--group", default=None, help="Tag for the leaderboard, e.g. one recipe over several seeds.")
@click.option("--no-plot", is_flag=True, help="Skip the per-run figures.")
@checkpoint_options
@run_options
def command(preset, checkpoints, sets, full_spectrum, tune, scorers, layers, scorer_params, out, group, no_plot,
            checkpoint_options, run):
    """Run benchmark PRESET on each CKPT and print near-/far-OOD AUROC and FPR95 per scorer.

    The preset names the ID test set, the fit set and the near and far OOD sets; each is looked up
    under --data-root by the usual spec grammar, and --set NAME=SPEC points any of them elsewhere.
    Every checkpoint is one run in the usual CSVs (ood.csv rows carry ood_group = near or far); the
    table shows, per run and scorer, the averages over the near and the far sets at the scorer's
    best layer (chosen on these test sets: an oracle choice) and at the penultimate layer.

    \b
    Examples:
      ncprobe bench ddu resnet20.th --data-root ~/data
      ncprobe bench openood-cifar10 'seeds/*.safetensors' --set tin=tin_resize.npz --group l2
    """
    from ..api import bench
    from ..jobs.inputs import expand_checkpoints
    from ..report.tables import render

    started = time.perf_counter()
    out_dir = ensure_writable_dir(out)
    paths = expand_checkpoints(checkpoints)
    result = bench(preset, paths, sets=list(sets), full_spectrum=full_spectrum, tune=tune, scorers=scorers,
                   layers=layers, out=out_dir, group=group, checkpoint_options=checkpoint_options,
                   scorer_params=list(scorer_params), plot=not no_plot, **run)
    if result is None:  # a distributed rank other than 0: rank 0 reports
        return
    first = result.runs[0].ood
    groups = first.drop_duplicates("ood").groupby("ood_group", sort=False)["ood"].agg(", ".join)
    click.echo(f"{result.preset}: ID {first['id'].iloc[0]}, fit {first['fit'].iloc[0]}; "
               + "; ".join(f"{g} OOD: {names}" for g, names in groups.items()))
    for r in result.runs:
        click.echo(f"run {r.run_id}: {r.checkpoint.name} ({r.checkpoint.arch})  ID accuracy {r.id_accuracy:.4f}")
        for line in r.notes:
            click.echo(f"  {line}")
    table = result.table
    shown = ["checkpoint", "scorer", "layer", "auroc_near", "auroc_far", "fpr95_near", "fpr95_far"]
    for choice, title in (("best", "each scorer at its best layer (chosen on these test sets)"),
                          ("penultimate", "at the penultimate layer (logit scorers at the logits)")):
        part = table[table["layer_choice"] == choice].sort_values("auroc_near", ascending=False, kind="stable")
        if len(result.runs) == 1:
            part = part.drop(columns="checkpoint")
        click.echo("")
        click.echo(f"Near / far OOD, {title}")
        click.echo(render(part[[c for c in shown if c in part.columns]]))
    click.echo("")
    click.echo("AUROC: higher = better; FPR95: OOD accepted when 95% of ID is kept, lower = better; "
               "near/far = mean over the group's sets (OpenOOD v1.5)")
    click.echo(f"wrote {out_dir / 'ood.csv'}, {out_dir / 'collapse.csv'}, {out_dir / 'bench.csv'}")
    click.echo(f"done in {time.perf_counter() - started:.1f}s")
