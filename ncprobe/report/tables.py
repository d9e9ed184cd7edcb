"""Plain-text and Markdown rendering of the result tables."""

from __future__ import annotations

import math

import pandas as pd


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def render(df: pd.DataFrame, fmt: str = "table", digits: int = 3) -> str:
    """``table`` (aligned text), ``markdown`` or ``csv``."""
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    cells = [[_fmt(v, digits) for v in row] for row in df.itertuples(index=False)]
    header = [str(c) for c in df.columns]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]

    def line(row):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


def layer_table(collapse: pd.DataFrame, ood: pd.DataFrame, transfer: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per layer: dim, NC1, NCC accuracy, each scorer's AUROC averaged over the OOD sets (best layer
    starred) and, when given, linear-probe transfer accuracy per shifted set."""
    base = collapse.sort_values("layer_index")[["layer", "dim", "nc1", "ncc_acc"]].copy()
    logits_row = pd.DataFrame([{"layer": "logits", "dim": _logit_dim(ood), "nc1": float("nan"), "ncc_acc": float("nan")}])
    base = pd.concat([base, logits_row], ignore_index=True) if (ood["layer"] == "logits").any() else base
    mean = ood.groupby(["layer", "scorer"])["auroc"].mean().unstack("scorer")
    scorers = [s for s in dict.fromkeys(ood["scorer"]) if s in mean.columns]
    out = base.set_index("layer")
    for scorer in scorers:
        col = mean[scorer].reindex(out.index)
        best = col.idxmax() if col.notna().any() else None
        out[scorer] = [
            "-" if pd.isna(v) else f"{v:.3f}{'*' if layer == best else ' '}" for layer, v in col.items()
        ]
    if transfer is not None and not transfer.empty:
        for name, part in transfer.groupby("transfer", sort=False):
            out[f"transfer:{name}"] = part.set_index("layer")["transfer_acc"].reindex(out.index)
    return out.reset_index()


def _logit_dim(ood):
    d = pd.to_numeric(ood.loc[ood["layer"] == "logits", "dim"], errors="coerce").dropna()
    return int(d.iloc[0]) if len(d) else 0


def best_layer_table(ood: pd.DataFrame) -> pd.DataFrame:
    """Per scorer at its best layer (highest mean AUROC): AUROC and FPR@95 on each OOD set."""
    mean = ood.groupby(["scorer", "layer"])["auroc"].mean()
    rows = []
    for scorer in dict.fromkeys(ood["scorer"]):
        per_layer = mean.loc[scorer]
        best = per_layer.idxmax() if per_layer.notna().any() else per_layer.index[0]  # all NaN: no best, shown as -
        part = ood[(ood["scorer"] == scorer) & (ood["layer"] == best)]
        row = {"scorer": scorer, "best layer": best}
        for r in part.itertuples():
            row[f"{r.ood} AUROC"] = r.auroc
        for r in part.itertuples():
            row[f"{r.ood} FPR95"] = r.fpr95
        row["mean AUROC"] = part["auroc"].mean()
        rows.append(row)
    return pd.DataFrame(rows).sort_values("mean AUROC", ascending=False, kind="stable")
