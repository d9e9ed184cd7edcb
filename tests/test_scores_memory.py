"""SHE and NNGuide against numpy formulas and pytorch-ood (outlier score = -ours)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from tests.helpers import assert_head_scorer_contract, head_problem

NEW = ("she", "nnguide")


def _problem(seed=0, n=300, d=16, c=5):
    return head_problem(seed, n, d, c, spread=1.5)


def _auroc(scores):
    return roc_auc_score(np.r_[np.ones(200), np.zeros(200)], scores)


def _linear(w, b, dtype):
    import torch

    lin = torch.nn.Linear(w.shape[1], w.shape[0]).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return lin


# --------------------------------------------------------------------------------------- SHE
def _she_numpy(x, y, w, b, z):
    pred = np.argmax(x @ w.T + b, axis=1)
    patterns = np.stack([x[(y == c) & (pred == c)].mean(0) for c in range(w.shape[0])])
    top = np.argmax(z @ w.T + b, axis=1)
    return np.array([row @ patterns[k] for row, k in zip(z, top, strict=True)])


def test_she_numpy():
    x, y, w, b, z = _problem()
    pred = np.argmax(x @ w.T + b, axis=1)
    assert 0.5 < (pred == y).mean() < 1.0  # some fit rows are misclassified and left out
    got = get_scorer("she").fit(x, y, head=(w, b)).score(z)
    np.testing.assert_allclose(got, _she_numpy(x, y, w, b, z), rtol=1e-12)


def test_she_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import SHE

    x, y, w, b, z = _problem(1)
    head = _linear(w, b, torch.float64)
    det = SHE(None, head)
    det.fit_features(torch.from_numpy(x), torch.from_numpy(y))
    theirs = -det.predict_features(torch.from_numpy(z)).detach().numpy()
    ours = get_scorer("she").fit(x, y, head=(w, b)).score(z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


def test_she_patterns_and_missing_classes():
    x, y, w, b, z = _problem(2)
    s = get_scorer("she").fit(x, y, head=(w, b))
    pred = np.argmax(x @ w.T + b, axis=1)
    c = 3
    np.testing.assert_allclose(s.patterns_[c], x[(y == c) & (pred == c)].mean(0), rtol=1e-12)
    # a class present in the labels but never classified correctly: an empty pattern, its rows score 0
    y_bad = y.copy()
    y_bad[y_bad == 4] = 0  # class 0 now holds rows the head calls 4 ...
    y_bad[pred == 0] = 1  # ... and every row it calls 0 is labelled 1
    s_bad = get_scorer("she").fit(x, y_bad, head=(w, b))
    assert s_bad.missing_patterns_.tolist() == [0]
    rows0 = z[np.argmax(z @ w.T + b, axis=1) == 0]
    assert len(rows0) and np.all(s_bad.score(rows0) == 0.0)
    # a class absent from the fit labels stores an empty pattern: its rows score 0
    keep = y != 2
    s = get_scorer("she").fit(x[keep], y[keep], head=(w, b))
    rows2 = z[np.argmax(z @ w.T + b, axis=1) == 2]
    assert len(rows2) and np.all(s.score(rows2) == 0.0)


# ----------------------------------------------------------------------------------- NNGuide
def _nnguide_numpy(x, w, b, z, k):
    e_fit = logsumexp(x @ w.T + b, axis=1)
    bank = x / np.linalg.norm(x, axis=1, keepdims=True) * e_fit[:, None]
    q = z / np.linalg.norm(z, axis=1, keepdims=True)
    sims = np.sort(q @ bank.T, axis=1)[:, ::-1][:, :k]
    return sims.mean(1) * logsumexp(z @ w.T + b, axis=1)


def test_nnguide_numpy_blocks_and_limits(monkeypatch):
    import ncprobe.scores.memory as memory

    x, y, w, b, z = _problem(3)
    for k in (1, 10, 300):
        got = get_scorer("nnguide", k=k).fit(x, head=(w, b)).score(z)
        np.testing.assert_allclose(got, _nnguide_numpy(x, w, b, z, k), rtol=1e-10)
    monkeypatch.setattr(memory, "_SIM_BLOCK", 1000)  # 3 query rows per block
    s = get_scorer("nnguide").fit(x, head=(w, b))
    np.testing.assert_allclose(s.score(z), _nnguide_numpy(x, w, b, z, 10), rtol=1e-10)
    # k = every fit row: the guidance is the similarity to the mean of the energy-scaled bank
    s = get_scorer("nnguide", k=300).fit(x, head=(w, b))
    q = z / np.linalg.norm(z, axis=1, keepdims=True)
    want = (q @ s.bank_.mean(0)) * logsumexp(z @ w.T + b, axis=1)
    np.testing.assert_allclose(s.score(z), want, rtol=1e-10)
    with pytest.warns(UserWarning, match="exceeds the 300 fit samples"):
        s = get_scorer("nnguide", k=500).fit(x, head=(w, b))
    assert s.k_ == 300


def test_nnguide_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import NNGuide

    x, y, w, b, z = _problem(4)
    det = NNGuide(None, _linear(w, b, torch.float32), k=10)
    det.fit_features(torch.from_numpy(x), torch.from_numpy(y))
    theirs = -det.predict_features(torch.from_numpy(z).float()).double().numpy()
    ours = get_scorer("nnguide").fit(x, head=(w, b)).score(z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)  # pytorch-ood: float32
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


# ------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", NEW)
def test_contract(name):
    assert_head_scorer_contract(name, *_problem(5))


def test_she_needs_labels_and_nnguide_k():
    x, y, w, b, z = _problem(6)
    with pytest.raises(ScoringError, match="labels"):
        get_scorer("she").fit(x, head=(w, b))
    with pytest.raises(ScoringError, match="k >= 1"):
        get_scorer("nnguide", k=0)
