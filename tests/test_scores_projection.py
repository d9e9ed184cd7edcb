"""Residual and pNML against numpy/sklearn formulas and pytorch-ood's PNML (outlier = -ours)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance
from sklearn.metrics import roc_auc_score

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from tests.helpers import assert_head_scorer_contract, head_problem

NEW = ("residual", "pnml")


def _problem(seed=0, n=300, d=16, c=5):
    return head_problem(seed, n, d, c, bias=0.3)


def _auroc(scores):
    return roc_auc_score(np.r_[np.ones(200), np.zeros(200)], scores)


# ---------------------------------------------------------------------------------- Residual
def _residual_numpy(x, w, b, z, dim):
    u = -np.linalg.pinv(w) @ b
    cov = EmpiricalCovariance(assume_centered=True).fit(x - u).covariance_
    lam, v = np.linalg.eigh(cov)
    null = v[:, np.argsort(lam)[::-1][dim:]]
    return -np.linalg.norm((z - u) @ null, axis=1), u, v[:, np.argsort(lam)[::-1][:dim]]


def test_residual_numpy_and_principal_points():
    x, y, w, b, z = _problem()
    for dim in (None, 4, 13):
        got = get_scorer("residual", dim=dim).fit(x, head=(w, b)).score(z)
        want, u, principal = _residual_numpy(x, w, b, z, dim or 8)  # default: d // 2 for d < 768
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # points of the principal subspace through u have no residual; the score is <= 0 everywhere
    s = get_scorer("residual", dim=4).fit(x, head=(w, b))
    _, u, principal = _residual_numpy(x, w, b, z, 4)
    inside = u + np.random.default_rng(0).standard_normal((5, 4)) @ principal.T
    np.testing.assert_allclose(s.score(inside), 0.0, atol=1e-9)
    assert np.all(s.score(z) <= 0)


def test_residual_is_vims_residual_term():
    x, y, w, b, z = _problem(1)
    vim = get_scorer("vim", dim=6).fit(x, head=(w, b))
    res = get_scorer("residual", dim=6).fit(x, head=(w, b))
    energy = logsumexp(z @ w.T + b, axis=1)
    np.testing.assert_allclose(
        vim.score(z), energy + vim.alpha_ * res.score(z), rtol=1e-9, atol=1e-9
    )


# -------------------------------------------------------------------------------------- pNML
def _pnml_numpy(x, w, b, z):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    inv = np.linalg.pinv(xn.T @ xn, hermitian=True)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    q = np.einsum("ij,jk,ik->i", zn, inv, zn)
    g = q / (1 + q)
    p = softmax(zn @ w.T + b, axis=1)
    nf = np.sum(p / (p + (1 - p) * p ** g[:, None]), axis=1)
    return -np.log(nf) / np.log(w.shape[0])


def test_pnml_numpy():
    x, y, w, b, z = _problem(2)
    got = get_scorer("pnml").fit(x, head=(w, b)).score(z)
    np.testing.assert_allclose(got, _pnml_numpy(x, w, b, z), rtol=1e-9, atol=1e-12)
    assert np.all(got <= 0) and np.all(got >= -1)  # regret in [0, 1]


def test_pnml_directions_outside_the_fit_span_have_no_regret():
    x, y, w, b, z = _problem(3)
    x = x.copy()
    x[:, 10:] = 0.0  # fit features span 10 of 16 coordinates: X^T X is singular, its pinv is used
    s = get_scorer("pnml").fit(x, head=(w, b))
    out = np.zeros((1, 16))
    out[0, 12] = 3.0  # orthogonal to the span: q = 0, g = 0, p^g = 1, every term p_c, regret 0
    np.testing.assert_allclose(s.score(out), [0.0], atol=1e-15)
    inside = z[:50].copy()
    inside[:, 10:] = 0.0
    np.testing.assert_allclose(s.score(inside), _pnml_numpy(x, w, b, inside), rtol=1e-8, atol=1e-12)


def test_pnml_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import PNML

    x, y, w, b, z = _problem(4)
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    det = PNML(None, lin).fit_features(torch.from_numpy(x), torch.from_numpy(y))
    theirs = -det.predict_features(torch.from_numpy(z)).double().numpy()
    ours = get_scorer("pnml").fit(x, head=(w, b)).score(z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)  # pytorch-ood: float32
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


def test_pnml_saturated_posteriors_stay_finite():
    x, y, w, b, z = _problem(5)
    s = get_scorer("pnml").fit(x, head=(50.0 * w, b))  # logits of hundreds: p_c rounds to 0 and 1
    out = s.score(z)
    assert np.isfinite(out).all() and np.all(out <= 0)


# ------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", NEW)
def test_contract(name):
    assert_head_scorer_contract(name, *_problem(6), atol=1e-15)


def test_parameter_checks():
    x, y, w, b, z = _problem(7)
    with pytest.raises(ScoringError, match="principal dimension"):
        get_scorer("residual", dim=16).fit(x, head=(w, b))
    with pytest.raises(ScoringError, match="dim must be >= 1"):
        get_scorer("residual", dim=0)
    with pytest.raises(ScoringError, match="all zero"):
        get_scorer("pnml").fit(np.zeros((5, 16)), head=(w, b))
