"""The built-in demo: the whole ncprobe loop on data that ships with scikit-learn, no download.

A small CNN is trained on digits 0-5 with three recipes (plain cross-entropy, L2-normalized
features, fixed-ETF projector + entropy regularizer); each checkpoint then goes through
``ncprobe layers`` with digits 6-9 as near-OOD, crops of scikit-learn's sample photographs as
far-OOD and Gaussian noise; the leaderboard ranks the recipes.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import pandas as pd

from .api import layers
from .finetune.train import finetune
from .report.leaderboard import leaderboard, legend, read_ood_csv
from .report.tables import render

ID_CLASSES = "0-5"
MODES = ("ce", "l2", "etf+entropy")


def run_demo(out: Path, *, epochs: int = 15, seed: int = 0, modes=MODES, progress: bool = True,
             cache_dir=None, echo=click.echo) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fit = f"digits:train@classes={ID_CLASSES}"
    id_set = f"digits:test@classes={ID_CLASSES}"
    oods = ["digits-6to9=digits:test@classes=6-9", "photos=patches@n=500,size=16", "noise=noise:gaussian@n=500,size=16"]
    started = time.perf_counter()
    results = {}
    for mode in modes:
        ckpt_path = out / f"digits-{mode.replace('+', '-')}.safetensors"
        echo(f"[{mode}] training small_cnn on {fit} for {epochs} epochs ...")
        _, history = finetune(None, arch="small_cnn", data=fit, mode=mode, epochs=epochs, seed=seed, val=id_set,
                              out=ckpt_path, progress=progress, optimizer="adamw", lr=3e-3, weight_decay=5e-4,
                              batch_size=64, warmup_epochs=1, projector_dim=256, flip=False)
        last = history[-1] if history else {}
        echo(f"[{mode}] val accuracy {last.get('val_acc', float('nan')):.3f}; scoring layers ...")
        results[mode] = layers(str(ckpt_path), id_set, oods, fit, out=out, group=mode, seed=seed, progress=progress,
                               cache_dir=cache_dir)
    ood = read_ood_csv(out / "ood.csv")
    ood = ood[ood["run_id"].isin([r.run_id for r in results.values()])]
    board = leaderboard(ood, layer="best", group_by=["group"], scorers=["gda", "mahalanobis", "knn", "energy", "msp"],
                        collapse=pd.concat([r.collapse for r in results.values()]), per_set=True)
    board = board.rename(columns={"group": "recipe"})
    per_set = [c for c in board.columns if c.startswith("auroc[")]  # one column per OOD set: a failing far set shows
    echo("")
    echo("Leaderboard: ID = digits 0-5; OOD = digits 6-9 (near), photo crops (far), Gaussian noise (far)")
    echo(render(board[["rank", "recipe", "scorer", "layer", "auroc_mean", *per_set, "auroc_worst", "fpr95_mean",
                       "id_accuracy", "nc1_penultimate"]]))
    for note in board.attrs.get("notes", []):
        echo(f"note: {note}")
    echo("")
    echo("Columns:")
    echo("  recipe           ce = cross-entropy; l2 = L2-normalized features (Haas et al. 2023);")
    echo("                   etf+entropy = fixed simplex-ETF projector + entropy regularizer (Harun et al. 2025)")
    echo("  scorer           OOD score (higher = more in-distribution); layer = where it worked best")
    echo(legend(["auroc_mean", *per_set, "auroc_worst", "fpr95_mean", "id_accuracy", "nc1_penultimate"]))
    echo("")
    echo(f"Per-layer plots: {', '.join(str(r.plot_path) for r in results.values())}")
    echo(f"Tables: {out / 'ood.csv'} and {out / 'collapse.csv'}  (try: ncprobe leaderboard {out / 'ood.csv'} --group-by group)")
    echo(f"demo finished in {time.perf_counter() - started:.0f}s")
    return results
