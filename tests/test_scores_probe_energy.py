"""probe_energy: energy of a logistic-regression probe on L2-normalized features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer


def _blobs(n=300, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * 3
    return centres[y] + rng.normal(size=(n, d)), y


def test_matches_sklearn_probe_and_scipy_logsumexp():
    x, y = _blobs()
    z = np.random.default_rng(1).normal(size=(50, x.shape[1]))
    scorer = get_scorer("probe_energy", c=0.5).fit(x, y)
    ref = LogisticRegression(C=0.5, max_iter=200, random_state=0).fit(x / np.linalg.norm(x, axis=1, keepdims=True), y)
    logits = ref.decision_function(z / np.linalg.norm(z, axis=1, keepdims=True))
    np.testing.assert_allclose(scorer.score(z), logsumexp(logits, axis=1), rtol=1e-10)
    t = 2.0
    hot = get_scorer("probe_energy", c=0.5, temperature=t).fit(x, y)
    np.testing.assert_allclose(hot.score(z), t * logsumexp(logits / t, axis=1), rtol=1e-10)


def test_two_classes_use_the_symmetric_softmax_pair():
    x, y = _blobs(classes=2)
    z = x[:20]
    scorer = get_scorer("probe_energy").fit(x, y)
    f = LogisticRegression(max_iter=200, random_state=0).fit(x / np.linalg.norm(x, axis=1, keepdims=True), y)
    f = f.decision_function(z / np.linalg.norm(z, axis=1, keepdims=True))
    np.testing.assert_allclose(scorer.score(z), np.logaddexp(-f / 2, f / 2), rtol=1e-10)


def test_id_scores_higher_than_between_class_ood():
    x, y = _blobs(n=600, d=8, classes=4, seed=3)
    scorer = get_scorer("probe_energy", c=10.0).fit(x[:400], y[:400])
    rng = np.random.default_rng(4)
    # OOD: directions halfway between no class in particular (isotropic), same norm range
    ood = rng.normal(size=(200, 8)) * np.linalg.norm(x, axis=1).mean() / np.sqrt(8)
    auroc = roc_auc_score(np.r_[np.ones(200), np.zeros(200)], np.r_[scorer.score(x[400:]), scorer.score(ood)])
    assert auroc > 0.8


def test_needs_labels_and_rejects_nan():
    x, y = _blobs()
    with pytest.raises(ScoringError, match="labels"):
        get_scorer("probe_energy").fit(x)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ScoringError, match="NaN"):
        get_scorer("probe_energy").fit(x, y).score(bad)
