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
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(layers) + 3), 7), sharex=True)
    nc1 = collapse.set_index("layer").loc[layers, "nc1"].astype(float)
    ax1.plot(xs, nc1.values, marker="o", color="black")
    if (nc1 > 0).all():
        ax1.set_yscale("log")
    ax1.set_ylabel("NC1 (lower = more collapsed)")
    ax1.grid(alpha=0.3)
    if title:
        ax1.set_title(title, fontsize=10)
    feat = ood[ood["layer"].isin(layers)]
    mean_auroc = feat.groupby(["scorer", "layer"])["auroc"].mean().reset_index()
    for scorer, part in mean_auroc.groupby("scorer"):
        part = part.set_index("layer").reindex(layers)
        ax2.plot(xs, part["auroc"].values, marker="o", label=scorer)
    logit = ood[ood["layer"] == "logits"].groupby("scorer")["auroc"].mean()
    for scorer, value in logit.items():
        ax2.axhline(value, linestyle="--", linewidth=0.8, alpha=0.7, color="grey")
        ax2.annotate(f"{scorer} (logits)", (xs[-1], value), fontsize=7, ha="right", va="bottom", color="grey")
    ax2.set_ylabel("AUROC, mean over OOD sets")
    ax2.set_xticks(xs)
    ax2.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
    ax2.set_xlabel("layer (stem to classifier)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=3, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
