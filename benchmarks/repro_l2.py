"""Miniature reproduction of Haas et al. (TMLR 2023): do L2-normalized features help OOD detection?

Trains a small CIFAR ResNet from scratch on ../shared/data/cifar10_train.npz (10,000 images) with
`ce` and with `l2`, same budget, several seeds; runs `ncprobe layers` on each against CIFAR-100,
MNIST, DTD textures and TinyImageNet (SVHN is not available here); then the leaderboard grouped by
recipe: mean and worst-case GDA AUROC at the penultimate layer, ID accuracy, penultimate NC1.
The paper's claims to check: comparable or better AUROC and accuracy, lower NC1, better worst case.

    python benchmarks/repro_l2.py                # 3 seeds x 2 recipes, 5 epochs (about 30 min on 2 cores)
    python benchmarks/repro_l2.py --seeds 5 --epochs 30
"""

from __future__ import annotations

import pandas as pd
from repro_common import OOD_FILES, REPO, Timer, base_parser, check_data, header, run_recipes

from ncprobe.report.leaderboard import leaderboard
from ncprobe.report.tables import render

RECIPES = ("ce", "l2")
SCORERS = ["gda", "mahalanobis", "knn", "energy", "msp", "featnorm"]


def main():
    ap = base_parser(__doc__)
    args = ap.parse_args()
    check_data(args.data_dir, ["cifar10_train.npz", "cifar10_test.npz", *OOD_FILES.values()])
    out = args.out or REPO / "benchmarks" / "out" / "repro_l2"
    total = Timer()
    run_recipes(args, out, RECIPES, SCORERS)
    ood = pd.read_csv(out / "ood.csv")
    collapse = pd.read_csv(out / "collapse.csv")
    board = leaderboard(
        ood,
        layer="penultimate",
        scorers=["gda", "knn", "featnorm", "energy"],
        group_by=["mode"],
        collapse=collapse,
    )
    per_set = (
        ood[(ood.scorer == "gda") & (ood.layer == "penultimate")]
        .groupby(["mode", "ood"])["auroc"]
        .agg(["mean", "std", "min"])
        .reset_index()
    )
    # l2's penultimate is the normalized feature; its encoder output is the feature before normalization
    by_layer = (
        ood[ood.scorer.isin(["gda", "featnorm", "knn"]) & ood.layer.isin(["encoder", "penultimate"])]
        .groupby(["run_id", "mode", "scorer", "layer"])["auroc"]
        .mean()
        .groupby(["mode", "scorer", "layer"])
        .agg(["mean", "min"])
        .rename(columns={"mean": "auroc_mean", "min": "auroc_worst"})
        .reset_index()
    )
    nc1 = collapse.pivot_table(
        index="layer", columns="mode", values="nc1", aggfunc="mean", sort=False
    ).reset_index()
    text = "\n".join(
        [
            header("Haas et al. miniature: ce vs l2", args),
            "Leaderboard at the penultimate layer, grouped by recipe (AUROC averaged over the 4 OOD sets):",
            "",
            render(board, "markdown"),
            "",
            "GDA AUROC at the penultimate layer per OOD set (mean, std, worst over seeds):",
            "",
            render(per_set, "markdown"),
            "",
            "Before (encoder) and after (penultimate) the L2 normalization, AUROC over the 4 OOD sets:",
            "",
            render(by_layer, "markdown"),
            "",
            "NC1 per layer (mean over seeds):",
            "",
            render(nc1, "markdown"),
            "",
            f"total time {total}",
        ]
    )
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
