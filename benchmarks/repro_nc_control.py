"""Miniature reproduction of Harun et al. (ICML 2025): controlling neural collapse per layer.

Trains a small CIFAR ResNet from scratch on ../shared/data/cifar10_train.npz with `ce` and with
`etf+entropy` (frozen simplex-ETF projector + KoLeo entropy regularizer on the encoder), same
budget, several seeds. For each: NC1 at the encoder and at the projector; OOD detection at the
projector (energy of a linear probe on L2-normalized features, FPR95 and AUROC; for `ce`, which
has no projector, at the encoder); OOD generalization at the encoder (linear-probe accuracy on
JPEG-compressed CIFAR-10 and on CIFAR-100 with its own labels); the across-layer correlations.
The paper's claims to check: the projector is more collapsed than the encoder, detection at the
projector improves, transfer at the encoder does not get worse.

    python benchmarks/repro_nc_control.py        # 3 seeds x 2 recipes, 5 epochs (about 30 min on 2 cores)
"""

from __future__ import annotations

import pandas as pd
from repro_common import OOD_FILES, REPO, Timer, base_parser, check_data, header, run_recipes, spec

from ncprobe.report.tables import render

RECIPES = ("ce", "etf+entropy")
SCORERS = ["probe_energy", "energy", "gda", "knn"]


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--projector-dim", type=int, default=2048)
    args = ap.parse_args()
    check_data(
        args.data_dir,
        ["cifar10_train.npz", "cifar10_test.npz", "cifar10jpeg75_test.npz", *OOD_FILES.values()],
    )
    out = args.out or REPO / "benchmarks" / "out" / "repro_nc_control"
    transfer = [
        spec(args.data_dir, "cifar10jpeg75_test.npz", "cifar10-jpeg75", args.eval_n),
        spec(args.data_dir, "cifar100mix_test.npz", "cifar100-labels", args.eval_n),
    ]
    total = Timer()
    run_recipes(args, out, RECIPES, SCORERS, finetune_options={"projector_dim": args.projector_dim},
                transfer=transfer)
    ood = pd.read_csv(out / "ood.csv")
    collapse = pd.read_csv(out / "collapse.csv")
    transfer_df = pd.read_csv(out / "transfer.csv")
    corr = pd.read_csv(out / "correlation.csv")

    # where each quantity is read: the projector exists only in etf modes; ce's encoder is its penultimate
    det_layer = {"ce": "encoder", "etf+entropy": "projector"}
    rows = []
    for mode in RECIPES:
        c = collapse[collapse["mode"] == mode].groupby("layer")["nc1"].mean()
        det = ood[
            (ood["mode"] == mode)
            & (ood["layer"] == det_layer[mode])
            & (ood["scorer"] == "probe_energy")
        ]
        det_run = det.groupby("run_id")[["auroc", "fpr95"]].mean()
        tr = transfer_df[(transfer_df["mode"] == mode) & (transfer_df["layer"] == "encoder")]
        row = {
            "recipe": mode,
            "NC1 encoder": c.get("encoder"),
            "NC1 projector": c.get("projector"),
            "detection layer": det_layer[mode],
            "AUROC": det_run["auroc"].mean(),
            "AUROC worst": det_run["auroc"].min(),
            "FPR95": det_run["fpr95"].mean(),
        }
        for name, part in tr.groupby("transfer"):
            row[f"transfer {name}"] = part["transfer_acc"].mean()
        row["ID accuracy"] = (
            ood[ood["mode"] == mode].drop_duplicates("run_id")["id_accuracy"].mean()
        )
        rows.append(row)
    summary = pd.DataFrame(rows)
    per_layer = collapse.pivot_table(
        index="layer", columns="mode", values="nc1", aggfunc="mean", sort=False
    )
    per_layer = per_layer.join(
        transfer_df.pivot_table(
            index="layer",
            columns=["mode", "transfer"],
            values="transfer_acc",
            aggfunc="mean",
            sort=False,
        ).pipe(lambda d: d.set_axis([f"transfer {m} {t}" for m, t in d.columns], axis=1))
    )
    richest = collapse.groupby("run_id")["layer"].transform("size").idxmax()  # a run with every layer
    order = collapse[collapse["run_id"] == collapse.loc[richest, "run_id"]].sort_values("layer_index")["layer"]
    per_layer = per_layer.reindex([layer for layer in order if layer in per_layer.index])
    corr_mean = corr.groupby(["mode", "y"])[["pearson_r", "spearman_rho"]].mean().reset_index()
    text = "\n".join(
        [
            header("Harun et al. miniature: ce vs etf+entropy", args),
            "Summary (means over seeds; detection = energy of a linear probe on L2-normalized features,",
            "averaged over the 4 OOD sets; transfer = linear-probe accuracy at the encoder):",
            "",
            render(summary, "markdown"),
            "",
            "NC1 and transfer accuracy per layer (mean over seeds):",
            "",
            render(per_layer.reset_index(), "markdown"),
            "",
            "Across-layer correlation of NC1 with detection FPR95 / transfer error (mean over seeds; the paper: r > 0, r < 0):",
            "",
            render(corr_mean, "markdown"),
            "",
            f"total time {total}",
        ]
    )
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
