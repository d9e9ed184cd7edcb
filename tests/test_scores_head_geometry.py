"""fDBD, NCI and GradNorm against numpy formulas, torch autograd and pytorch-ood (outlier = -ours)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from tests.helpers import assert_head_scorer_contract, head_problem

NEW = ("fdbd", "nci", "gradnorm")


def _problem(seed=0, n=300, d=16, c=5):
    return head_problem(seed, n, d, c)


def _auroc(scores):
    return roc_auc_score(np.r_[np.ones(200), np.zeros(200)], scores)


def _linear32(w, b):
    import torch

    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return lin


# -------------------------------------------------------------------------------------- fDBD
def _fdbd_numpy(x, w, b, z, center=True):
    mu = x.mean(0) if center else np.zeros(x.shape[1])
    out = []
    for row in z:
        logits = w @ row + b
        k = int(np.argmax(logits))
        terms = [
            abs(logits[k] - logits[c]) / np.linalg.norm(w[k] - w[c])
            for c in range(len(b))
            if c != k
        ]
        out.append(np.mean(terms) / np.linalg.norm(row - mu))
    return np.array(out)


def test_fdbd_numpy():
    x, y, w, b, z = _problem()
    for center in (True, False):
        got = get_scorer("fdbd", center=center).fit(x, head=(w, b)).score(z)
        np.testing.assert_allclose(got, _fdbd_numpy(x, w, b, z, center), rtol=1e-10)


def test_fdbd_two_classes_is_the_distance_to_the_hyperplane():
    x, y, w, b, z = _problem(1)
    w2, b2 = w[:2], b[:2]
    n = w2[0] - w2[1]
    off = b2[0] - b2[1]
    foot = z - ((z @ n + off) / (n @ n))[:, None] * n  # orthogonal projection onto the boundary
    assert np.allclose(foot @ n + off, 0.0, atol=1e-9)
    want = np.linalg.norm(z - foot, axis=1) / np.linalg.norm(z - x.mean(0), axis=1)
    got = get_scorer("fdbd").fit(x, head=(w2, b2)).score(z)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_fdbd_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import fDBD

    x, y, w, b, z = _problem(2)
    det = fDBD(None, _linear32(w, b)).fit_features(torch.from_numpy(x))
    theirs = -det.predict_features(torch.from_numpy(z)).double().numpy()
    ours = get_scorer("fdbd").fit(x, head=(w, b)).score(z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)  # pytorch-ood computes in float32
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


# --------------------------------------------------------------------------------------- NCI
def test_nci_numpy_and_limit():
    x, y, w, b, z = _problem(3)
    mu = x.mean(0)
    top = np.argmax(z @ w.T + b, axis=1)
    zc = z - mu
    want = np.sum(zc * w[top], 1) / np.linalg.norm(zc, axis=1) + 0.01 * np.abs(z).sum(1)
    got = get_scorer("nci", alpha=0.01).fit(x, head=(w, b)).score(z)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # alpha = 0, a centred feature along its predicted class's weight: the score is ||w_c||
    s = get_scorer("nci", alpha=0).fit(x, head=(w, b))
    probes = mu + 5.0 * w  # row c: mu moved along w_c
    hit = np.argmax(probes @ w.T + b, axis=1) == np.arange(5)  # ... and predicted as class c
    assert hit.sum() >= 3
    np.testing.assert_allclose(s.score(probes[hit]), np.linalg.norm(w[hit], axis=1), rtol=1e-12)
    assert s.score(mu[None]).tolist() == [0.0]  # at the fit mean: no direction, alignment 0


def test_nci_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import NCI

    x, y, w, b, z = _problem(4)
    for alpha in (0.0, 1e-2):
        det = NCI(None, _linear32(w, b), alpha=alpha).fit_features(torch.from_numpy(x))
        theirs = -det.predict_features(torch.from_numpy(z)).double().numpy()
        ours = get_scorer("nci", alpha=alpha).fit(x, head=(w, b)).score(z)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)  # float32 in pytorch-ood
        assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


# ---------------------------------------------------------------------------------- GradNorm
def _gradnorm_autograd(w, b, z, T=1.0):
    """The paper's definition by backpropagation: L1 norm of dKL(u || softmax(f/T))/dW per row."""
    import torch

    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b)
    c = w.shape[0]
    out = []
    for row in torch.from_numpy(z):
        logp = torch.log_softmax((wt @ row + bt) / T, dim=0)
        kl = torch.sum((1.0 / c) * (np.log(1.0 / c) - logp))  # KL(u || p), exactly
        (g,) = torch.autograd.grad(kl, wt)
        out.append(g.abs().sum().item())
    return np.array(out)


def test_gradnorm_closed_form_matches_autograd_and_numpy():
    x, y, w, b, z = _problem(5)
    zz = z[::10]
    for T in (1.0, 2.5):
        got = get_scorer("gradnorm", T=T).fit(x, head=(w, b)).score(zz)
        np.testing.assert_allclose(got, _gradnorm_autograd(w, b, zz, T), rtol=1e-10)
        p = softmax((zz @ w.T + b) / T, axis=1)
        want = np.abs(p - 1 / 5).sum(1) * np.abs(zz).sum(1) / T
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # a uniform prediction has a zero gradient; a one-hot one the largest, 2 (1 - 1/C) ||z||_1
    s = get_scorer("gradnorm").fit(x, head=(np.zeros_like(w), np.zeros(5)))
    assert s.score(z[:3]).tolist() == [0.0, 0.0, 0.0]
    s = get_scorer("gradnorm").fit(x, head=(np.zeros_like(w), np.array([800.0, 0, 0, 0, 0])))
    np.testing.assert_allclose(s.score(z[:3]), 2 * (1 - 1 / 5) * np.abs(z[:3]).sum(1), rtol=1e-12)


def test_gradnorm_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import GradNorm

    x, y, w, b, z = _problem(6)
    lin = torch.nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    det = GradNorm(
        lin, param_filter=lambda name: name == "weight"
    )  # last-layer weights, as the paper
    theirs = -det.predict(torch.from_numpy(z)).numpy()
    ours = get_scorer("gradnorm").fit(x, head=(w, b)).score(z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


# ------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", NEW)
def test_contract(name):
    assert_head_scorer_contract(name, *_problem(7))


def test_degenerate_inputs_stay_finite():
    x, y, w, b, z = _problem(8)
    w_dup = w.copy()
    w_dup[1] = w_dup[0]  # two classes with one weight row: no boundary between them
    s = get_scorer("fdbd").fit(x, head=(w_dup, b))
    assert np.isfinite(s.score(np.vstack([z[:5], x.mean(0, keepdims=True)]))).all()
    with pytest.raises(ScoringError, match="at least 2 classes"):
        get_scorer("fdbd").fit(x, head=(w[:1], b[:1]))
    with pytest.raises(ScoringError, match="alpha"):
        get_scorer("nci", alpha=-1)
    with pytest.raises(ScoringError, match="T must be > 0"):
        get_scorer("gradnorm", T=0)
