"""Across-layer correlation between collapse (NC1) and detection or transfer.

Harun et al. (ICML 2025) report, across VGG17 layers, Pearson r = 0.77 between NC1 and OOD
detection and r = -0.60 between NC1 and OOD generalization, with stronger collapse (lower NC1)
going with better detection and worse generalization. Both quantities are therefore errors: the
detection FPR@95 and the transfer error (1 - linear-probe accuracy), which is what is correlated
here, so that the paper's direction reads r > 0 for detection and r < 0 for transfer. Pearson's r
and Spearman's rho (with p-values) come from scipy.stats. Layers whose collapse row repeats the
previous one exactly (e.g. a last stage whose pooled output *is* the penultimate feature) are
counted once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def correlate(x, y) -> dict:
    """Pearson and Spearman correlation of two equally long sequences (NaN where undefined)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nan = float("nan")
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n_layers": int(len(x)), "pearson_r": nan, "pearson_p": nan, "spearman_rho": nan, "spearman_p": nan}
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    return {"n_layers": int(len(x)), "pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
            "spearman_rho": float(sr.statistic), "spearman_p": float(sr.pvalue)}


def distinct_layers(collapse: pd.DataFrame, columns=("dim", "nc1", "ncc_acc", "tr_ratio")) -> list[str]:
    """Layers in depth order, dropping any whose collapse row equals the previous kept one."""
    cols = [c for c in columns if c in collapse.columns]
    kept, last = [], None
    for row in collapse.sort_values("layer_index").itertuples(index=False):
        key = tuple(getattr(row, c) for c in cols)
        if key != last:
            kept.append(row.layer)
        last = key
    return kept


def correlation_frame(collapse: pd.DataFrame, ood: pd.DataFrame, transfer: pd.DataFrame | None = None,
                      nc_column: str = "nc1") -> pd.DataFrame:
    """Rows: NC1 vs each feature scorer's FPR@95 (mean over OOD sets) across layers, and NC1 vs each
    transfer set's error. Only scorers present at 3 or more distinct layers give a number."""
    layers = distinct_layers(collapse)
    nc = collapse.set_index("layer")[nc_column].astype(float)
    rows = []
    feat = ood[ood["layer"].isin(layers)]
    for scorer, part in feat.groupby("scorer", sort=False):
        fpr = part.groupby("layer")["fpr95"].mean()
        common = [layer for layer in layers if layer in fpr.index]
        rows.append({"x": nc_column, "y": f"fpr95:{scorer}", **correlate(nc[common], fpr[common])})
    if transfer is not None and not transfer.empty:
        for name, part in transfer.groupby("transfer", sort=False):
            err = 1.0 - part.set_index("layer")["transfer_acc"]
            common = [layer for layer in layers if layer in err.index]
            rows.append({"x": nc_column, "y": f"transfer_error:{name}", **correlate(nc[common], err[common])})
    return pd.DataFrame(rows)
