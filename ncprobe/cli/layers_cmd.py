"""`ncprobe layers`: per-layer NC statistics and OOD scores, the main job."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import (
    cache_note,
    checkpoint_options,
    ensure_writable_dir,
    run_options,
    scorers_option,
)


@click.command(name="layers")
@click.argument("checkpoints", metavar="CKPT...", nargs=-1, required=True)
@click.option("--id", "id_spec", required=True, metavar="SPEC", help="In-distribution test set (cifar10, test.npz, ...).")
@click.option("--ood", "ood_specs", multiple=True, required=True, metavar="SPEC",
              help="Out-of-distribution set; repeat for several (svhn, cifar100, textures.npz, noise:gaussian, ...).")
@click.option("--fit", "fit_spec", default=None, metavar="SPEC",
              help="Labelled set the scorers and NC statistics are fitted on (default: the ID set's train split).")
@click.option("--fit-split", type=float, default=None, metavar="FRAC",
              help="Instead of --fit, hold out this fraction of the ID set (per class) as the fit set.")
@scorers_option
@click.option("--layers", default=None, metavar="NAMES",
              help="Comma-separated probe points, or 'all' (default: the block groups, penultimate, logits).")
@click.option("--scorer-param", "scorer_params", multiple=True, metavar="NAME.PARAM=VALUE",
              help="A scorer's hyper-parameter, e.g. knn.k=10 or react.percentile=95; repeatable. "
                   "The values used are recorded in ood.csv's params column.")
@click.option("--knn-k", type=click.IntRange(min=1), default=None, help="Same as --scorer-param knn.k=K.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("ncprobe-runs"), show_default=True,
              metavar="DIR", help="Append rows to DIR/ood.csv and DIR/collapse.csv; write DIR/<run_id>.png.")
@click.option("--transfer", "transfer_specs", multiple=True, metavar="NAME=SPEC",
              help="Labelled shifted set for a per-layer linear probe (OOD generalization); repeatable. "
                   "Half of it (per class) trains the probe, the rest measures accuracy.")
@click.option("--val-ood", "val_specs", multiple=True, metavar="SPEC",
              help="Validation OOD set (repeatable): each tunable scorer's hyper-parameters are chosen from its grid "
                   "by AUROC on these sets, never on the --ood sets, and recorded in the params column.")
@click.option("--save-scores", is_flag=True,
              help="Also write every per-sample score (ID and OOD sets, every layer/scorer) to DIR/<run_id>.scores.npz.")
@click.option("--group", default=None, help="Tag for the leaderboard, e.g. one recipe over several seeds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --fit-split (stored with the rows).")
@click.option("--no-plot", is_flag=True, help="Skip the per-run figure.")
@checkpoint_options
@run_options
def command(checkpoints, id_spec, ood_specs, fit_spec, fit_split, scorers, layers, scorer_params, knn_k, out,
            transfer_specs, val_specs, save_scores, group,
            seed, no_plot, checkpoint_options, run):
    """How collapsed each layer of CKPT is, and how well each OOD score separates ID from OOD there.

    One forward pass per dataset (cached), then NC metrics and every feature scorer at every layer
    and every logit scorer on the logits. Several CKPTs (or a quoted glob such as 'runs/seed*.safetensors')
    are each their own run in the same CSVs, with each dataset read once for all of them, and a
    leaderboard over them at the end (mean, std, worst; pooled by --group or by the recipe stored
    in ncprobe checkpoints). Scores: higher = more in-distribution. FPR95 treats ID
    as positive (fraction of OOD accepted when 95% of ID is kept); fpr95_oodpos in the CSV is
    OpenOOD's convention.

    \b
    Example:
      ncprobe layers resnet20.th --id cifar10 --ood svhn --ood cifar100 --out runs/
      ncprobe layers 'seeds/l2-*.safetensors' --id cifar10 --ood svhn --group l2 --out runs/
    """
    from ..api import layers_many
    from ..jobs.inputs import expand_checkpoints

    started = time.perf_counter()
    out_dir = ensure_writable_dir(out)
    paths = expand_checkpoints(checkpoints)
    params = list(scorer_params) + ([f"knn.k={knn_k}"] if knn_k else [])
    results = layers_many(paths, id_spec, list(ood_specs), fit_spec, scorers=scorers, layers=layers, out=out_dir,
                          fit_split=fit_split, seed=seed, group=group, checkpoint_options=checkpoint_options,
                          scorer_params=params, plot=not no_plot, transfer=list(transfer_specs),
                          val_ood=list(val_specs), save_scores=save_scores, **run)
    if results[0] is None:  # a distributed rank other than 0: rank 0 reports
        return
    if len(results) == 1:
        echo_run(results[0], out_dir, bool(transfer_specs))
    else:
        echo_runs(results, out_dir)
    click.echo(f"done in {time.perf_counter() - started:.1f}s")


def echo_run(result, out_dir: Path, transfer: bool) -> None:
    """The report of one checkpoint's run: per-layer table, best layer per OOD set, correlations."""
    from ..report.tables import best_layer_table, layer_table, render

    ckpt = result.checkpoint
    row = result.ood.iloc[0]
    click.echo(f"{ckpt.name} ({ckpt.arch}, {ckpt.num_classes} classes)  ID {row['id']} "
               f"(accuracy {result.id_accuracy:.4f})  fit {row['fit']} (n={row['n_fit']})")
    click.echo(f"OOD: {', '.join(dict.fromkeys(result.ood['ood']))}")
    for line in result.notes:
        click.echo(line)
    click.echo("")
    click.echo("Per layer: NC1 (lower = more collapsed), NCC accuracy, AUROC per scorer averaged over OOD sets "
               "(* = best layer)")
    click.echo(render(layer_table(result.collapse, result.ood, result.transfer)))
    click.echo("")
    click.echo("Per OOD set, each scorer at its best layer (AUROC higher = better, FPR95 lower = better)")
    click.echo(render(best_layer_table(result.ood)))
    click.echo("")
    corr = result.correlation
    if corr is not None and not corr.empty and corr["pearson_r"].notna().any():
        click.echo("Across layers: correlation of NC1 with detection FPR95 and transfer error "
                   "(Harun et al., VGG17: r = 0.77 and r = -0.60; r > 0 and r < 0 is their direction)")
        shown = corr[corr["pearson_r"].notna()]
        click.echo(render(shown[["y", "n_layers", "pearson_r", "spearman_rho"]].rename(columns={"y": "NC1 vs"})))
        click.echo("")
    note = cache_note(result.from_cache)
    if note:
        click.echo(note)
    written = ["ood.csv", "collapse.csv", "correlation.csv"] + (["transfer.csv"] if transfer else [])
    if result.scores_path is not None:
        written.append(result.scores_path.name)
    click.echo(f"run {result.run_id}: wrote {', '.join(str(out_dir / w) for w in written)}"
               + (f", {result.plot_path}" if result.plot_path else ""))


def echo_runs(results, out_dir: Path) -> None:
    """The report of several checkpoints: one line per run, then the leaderboard over them."""
    import pandas as pd

    from ..report.leaderboard import leaderboard, legend
    from ..report.tables import render

    for r in results:
        ck = r.checkpoint
        best = r.ood.groupby(["scorer", "layer"])["auroc"].mean().sort_values(ascending=False)
        (scorer, layer), value = best.index[0], best.iloc[0]
        extra = "".join(f", {k} {v}" for k, v in (("group", r.ood["group"].iloc[0]), ("recipe", ck.recipe_id)) if v)
        click.echo(f"run {r.run_id}: {ck.name} ({ck.arch}{extra})  ID accuracy {r.id_accuracy:.4f}  "
                   f"best {scorer} at {layer}: AUROC {value:.4f}")
        for line in r.notes:
            click.echo(f"  {line}")
    click.echo("")
    ood = pd.concat([r.ood for r in results], ignore_index=True)
    coll = pd.concat([r.collapse for r in results], ignore_index=True)
    board = leaderboard(ood, layer="best", group_by=["group", "recipe"], collapse=coll)
    click.echo("Leaderboard over these runs (each run at its best layer per scorer; AUROC averaged over OOD sets)")
    click.echo(render(board))
    for line in board.attrs.get("notes", []):
        click.echo(f"note: {line}")
    click.echo(legend(board.columns))
    click.echo(f"wrote {out_dir / 'ood.csv'}, {out_dir / 'collapse.csv'} ({len(results)} runs)")
