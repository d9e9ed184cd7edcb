"""The per-run figure: NC1 and each scorer's mean AUROC against layer depth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_layers(collapse: pd.DataFrame, ood: pd.DataFrame, path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    layers = list(collapse.sort_values("layer_index")["layer"])
    xs = list(range(len(layers)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(layers) + 4), 7), sharex=True)
    nc1 = collapse.set_index("layer").loc[layers, "nc1"].astype(float)
    ax1.plot(xs, nc1.values, marker="o", color="black")
    if (nc1 > 0).all():
        ax1.set_yscale("log")
    ax1.set_ylabel("NC1 (lower = more collapsed)")
    ax1.grid(alpha=0.3)
    if title:
        ax1.set_title(title, fontsize=10)
    has_logits = (ood["layer"] == "logits").any() and "logits" not in layers
    ticks = layers + (["logits"] if has_logits else [])
    mean_auroc = ood.groupby(["scorer", "layer"], sort=False)["auroc"].mean().reset_index()
    markers = "osD^v<>pXh*"
    for i, (scorer, part) in enumerate(mean_auroc.groupby("scorer", sort=False)):
        part = part.set_index("layer").reindex(ticks)["auroc"]
        style = {"marker": markers[i % len(markers)], "label": scorer}
        if part.notna().sum() == 1 and has_logits and pd.notna(part.get("logits")):
            ax2.scatter([len(ticks) - 1], [part["logits"]], s=40, **style)  # logit scorers live at the logits only
        else:
            ax2.plot(range(len(ticks)), part.values, **style)
    ax2.set_ylabel("AUROC, mean over OOD sets")
    ax2.set_xticks(range(len(ticks)))
    ax2.set_xticklabels(ticks, rotation=30, ha="right", fontsize=8)
    ax2.set_xlabel("layer (stem to classifier)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
