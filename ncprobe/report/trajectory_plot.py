"""The trajectory figure: an NC metric (NC1 by default) against epoch, one line per layer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

_STYLES = ("-", "--", ":", "-.")


def _x_column(rows: pd.DataFrame) -> str:
    """``epoch`` when every row has one, else ``step`` (the position in the trajectory)."""
    return "epoch" if "epoch" in rows and pd.to_numeric(rows["epoch"], errors="coerce").notna().all() else "step"


def _series(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per training run in ``rows``: recipe, group and seed; one unlabelled series when
    there is only one."""
    keys = [k for k in ("recipe", "group", "seed") if k in rows]
    if not keys:
        return [("", rows)]
    parts = list(rows.groupby(keys, sort=True, dropna=False))
    if len(parts) == 1:
        return [("", rows)]
    out = []
    for key, part in parts:
        key = key if isinstance(key, tuple) else (key,)
        label = " ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True) if str(v) not in ("", "nan"))
        out.append((label, part))
    return out


def plot_trajectory(rows: pd.DataFrame, path, title: str = "", metric: str = "nc1") -> Path:
    """Draw ``metric`` (rows of trajectory.csv already restricted to it) against epoch, one colour per
    layer in depth order and one line style per training run, log y axis when every value is positive."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    x_col = _x_column(rows)
    layers = list(rows.sort_values("layer_index", kind="stable")["layer"].drop_duplicates())
    series = _series(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["black"])
    for s, (label, part) in enumerate(series):
        for i, layer in enumerate(layers):
            line = part[part["layer"] == layer].sort_values(x_col, kind="stable")
            if line.empty:
                continue
            name = layer if not label else f"{layer} [{label}]"
            ax.plot(line[x_col].astype(float), line["value"].astype(float), marker="o", markersize=3,
                    color=colours[i % len(colours)], linestyle=_STYLES[s % len(_STYLES)], label=name)
    values = rows["value"].astype(float)
    if len(values) and (values > 0).all():
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch" if x_col == "epoch" else "checkpoint (given order)")
    ax.set_ylabel(f"{metric.upper() if metric == 'nc1' else metric} (lower = more collapsed)"
                  if metric.startswith("nc") else metric)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
