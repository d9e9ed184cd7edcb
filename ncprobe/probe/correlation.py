"""Across-layer correlation between collapse (NC1) and detection or transfer.

Harun et al. (ICML 2025) report, across VGG17 layers, Pearson r = 0.77 between NC1 and OOD
detection and r = -0.60 between NC1 and transfer. This module computes the same statistics
(Pearson's r and Spearman's rho, with p-values, via scipy.stats) for any run's tables.
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


def correlation_frame(collapse: pd.DataFrame, ood: pd.DataFrame, transfer: pd.DataFrame | None = None,
                      nc_column: str = "nc1") -> pd.DataFrame:
    """Rows: NC1 vs each feature scorer's mean AUROC across layers, and NC1 vs each transfer set's accuracy."""
    nc = collapse.set_index("layer")[nc_column].astype(float)
    rows = []
    feat = ood[ood["layer"].isin(nc.index)]
    for scorer, part in feat.groupby("scorer", sort=False):
        auroc = part.groupby("layer")["auroc"].mean()
        common = [layer for layer in nc.index if layer in auroc.index]
        rows.append({"x": nc_column, "y": f"auroc:{scorer}", **correlate(nc[common], auroc[common])})
    if transfer is not None and not transfer.empty:
        for name, part in transfer.groupby("transfer", sort=False):
            acc = part.set_index("layer")["transfer_acc"]
            common = [layer for layer in nc.index if layer in acc.index]
            rows.append({"x": nc_column, "y": f"transfer:{name}", **correlate(nc[common], acc[common])})
    return pd.DataFrame(rows)
