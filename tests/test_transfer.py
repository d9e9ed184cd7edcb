"""Transfer probes and NC-vs-OOD correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ncprobe.errors import NcprobeError
from ncprobe.features import FeatureSet
from ncprobe.transfer import correlate, correlation_frame, transfer_accuracy, transfer_frame


def _blobs(n=400, d=8, classes=4, sep=10.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * sep
    return centres[y] + rng.normal(size=(n, d)), y


def test_separable_set_gives_accuracy_one():
    x, y = _blobs(sep=50.0)
    train = np.arange(len(y)) < len(y) // 2  # labels cycle, so both halves hold every class
    assert transfer_accuracy(x[train], y[train], x[~train], y[~train]) == 1.0


def test_shuffled_labels_give_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 16))
    y = rng.integers(0, 4, size=4000)
    acc = transfer_accuracy(x[:2000], y[:2000], x[2000:], y[2000:])
    # chance is 0.25; the binomial s.d. over 2000 test samples is ~0.01
    assert abs(acc - 0.25) < 0.05


def test_transfer_frame_per_layer_and_unlabelled_error():
    x, y = _blobs(sep=50.0)
    noise = np.random.default_rng(2).normal(size=x.shape)
    fs = FeatureSet(name="shift", layers=["good", "noise", "logits"], labels=y,
                    features={"good": x.astype(np.float32), "noise": noise.astype(np.float32), "logits": x[:, :4]})
    table = transfer_frame(fs, "shift", seed=0)
    acc = table.set_index("layer")["transfer_acc"]
    assert list(table["layer"]) == ["good", "noise"]
    assert acc["good"] == 1.0 and acc["noise"] < 0.5
    assert (table["n_train"] + table["n_test"] == len(y)).all()
    fs.labels = -np.ones_like(y)
    with pytest.raises(NcprobeError, match="labels"):
        transfer_frame(fs, "shift")


def test_correlate_matches_scipy_and_monotone_gives_spearman_one():
    x = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 9.0])
    y = np.exp(x)  # strictly increasing, not linear
    c = correlate(x, y)
    assert c["spearman_rho"] == pytest.approx(1.0)
    assert c["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert correlate(x, -y)["spearman_rho"] == pytest.approx(-1.0)
    assert np.isnan(correlate([1, 2], [3, 4])["pearson_r"])  # too few layers: undefined, not an error


def test_correlation_frame_joins_layers_and_counts_repeats_once():
    # layer "d2" repeats "d" exactly (a last stage whose pooled output is the penultimate feature)
    collapse = pd.DataFrame({"layer": ["a", "b", "c", "d", "d2"], "layer_index": range(5), "dim": [8] * 5,
                             "nc1": [4.0, 3.0, 2.0, 1.0, 1.0], "ncc_acc": [0.5, 0.6, 0.7, 0.9, 0.9]})
    ood = pd.DataFrame({"layer": ["a", "b", "c", "d", "d2"] * 2, "scorer": ["gda"] * 10,
                        "ood": ["o1"] * 5 + ["o2"] * 5,
                        "fpr95": [0.9, 0.7, 0.5, 0.3, 0.3, 0.8, 0.75, 0.4, 0.35, 0.35]})
    transfer = pd.DataFrame({"transfer": ["t"] * 5, "layer": ["a", "b", "c", "d", "d2"],
                             "transfer_acc": [0.9, 0.8, 0.7, 0.65, 0.65]})
    corr = correlation_frame(collapse, ood, transfer).set_index("y")
    assert corr.loc["fpr95:gda", "n_layers"] == 4
    assert corr.loc["fpr95:gda", "spearman_rho"] == pytest.approx(1.0)  # the paper's direction for detection
    assert corr.loc["transfer_error:t", "spearman_rho"] == pytest.approx(-1.0)  # and for transfer
    mean_fpr = ood[ood.layer != "d2"].groupby("layer")["fpr95"].mean()
    expected = stats.pearsonr([4.0, 3.0, 2.0, 1.0], mean_fpr[["a", "b", "c", "d"]]).statistic
    assert corr.loc["fpr95:gda", "pearson_r"] == pytest.approx(expected)
