"""OOD generalization per layer: a linear probe trained on part of a labelled shifted set.

Harun et al. (ICML 2025) measure transfer as linear-probe accuracy on each OOD set's own labels,
at the encoder. Here the probe is scikit-learn's multinomial logistic regression on standardized
cached features, with a fixed budget (L2 penalty C, max_iter) and a seeded, stratified split, so
every layer gets the same treatment and the result is reproducible.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..errors import NcprobeError
from ..features.probe_points import LOGITS


def split_indices(labels: np.ndarray, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) indices; classes with fewer than 2 samples go to train only."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    counts = np.bincount(labels)
    ok = counts[labels] >= 2
    train, test = train_test_split(idx[ok], train_size=train_fraction, random_state=seed, stratify=labels[ok])
    return np.sort(np.concatenate([train, idx[~ok]])), np.sort(test)


def transfer_accuracy(x_train, y_train, x_test, y_test, *, c: float = 1.0, max_iter: int = 300, seed: int = 0) -> float:
    """Held-out accuracy of a standardized multinomial logistic regression (fixed budget)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
        raise NcprobeError("transfer features contain NaN or inf; check the checkpoint (it produces non-finite activations)")
    if len(np.unique(y_train)) < 2:
        raise NcprobeError("a transfer set needs at least two classes with labels; give a labelled shifted set")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fixed budget by design
        model.fit(np.asarray(x_train, np.float64), y_train)
    return float((model.predict(np.asarray(x_test, np.float64)) == y_test).mean())


def transfer_frame(fs, name: str, *, train_fraction: float = 0.5, seed: int = 0, c: float = 1.0,
                   max_iter: int = 300, include_logits: bool = False) -> pd.DataFrame:
    """One row per layer: linear-probe accuracy on the held-out part of the labelled set ``fs``."""
    labels = fs.labels
    if len(labels) == 0 or (labels < 0).any():
        raise NcprobeError(f"transfer set {name!r} needs labels for every sample (class folders, an npz with y)")
    _, labels = np.unique(labels, return_inverse=True)
    train, test = split_indices(labels, train_fraction, seed)
    rows = []
    for index, layer in enumerate(fs.layers):
        if layer == LOGITS and not include_logits:
            continue
        x = fs[layer]
        acc = transfer_accuracy(x[train], labels[train], x[test], labels[test], c=c, max_iter=max_iter, seed=seed)
        rows.append({"transfer": name, "layer": layer, "layer_index": index, "dim": x.shape[1],
                     "transfer_acc": acc, "n_train": len(train), "n_test": len(test),
                     "transfer_classes": int(labels.max()) + 1})
    return pd.DataFrame(rows)
