"""Entropy, tempscale and klm against numpy/scipy formulas and pytorch-ood (outlier score = -ours)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import roc_auc_score

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer

NEW = ("entropy", "tempscale", "klm")


def _problem(seed=0, n=300, c=5):
    """Noisy logits of a 5-class problem: fit (with labels), ID test, and OOD (flatter) logits."""
    rng = np.random.default_rng(seed)

    def draw(m):
        y = rng.integers(0, c, m)
        lg = 2.0 * rng.standard_normal((m, c))
        lg[np.arange(m), y] += 3.0
        return lg, y

    fit, y = draw(n)
    test, _ = draw(200)
    ood = 1.5 * rng.standard_normal((200, c))
    return fit, y, test, ood


def _auroc(id_scores, ood_scores):
    return roc_auc_score(
        np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))], np.r_[id_scores, ood_scores]
    )


def _nll(logits, y, t):
    return -log_softmax(logits / t, axis=1)[np.arange(len(y)), y].mean()


# ----------------------------------------------------------------------------------- entropy
def test_entropy_numpy_and_limits():
    fit, y, test, ood = _problem()
    p = softmax(test, axis=1)
    want = np.sum(p * np.log(p), axis=1)
    np.testing.assert_allclose(get_scorer("entropy").fit().score(test), want, rtol=1e-12)
    # uniform posterior: -log C; one-hot limit: 0 (exactly, once the others underflow)
    got = get_scorer("entropy").fit().score(np.array([[2.0] * 5, [2000.0, 0, 0, 0, 0]]))
    np.testing.assert_allclose(got, [-np.log(5), 0.0], atol=1e-15)


def test_entropy_against_pytorch_ood_and_its_clipping():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import Entropy

    fit, y, test, ood = _problem(1)
    both = np.vstack([test, ood])
    assert softmax(both, axis=1).min() > 1e-7  # no clipping in pytorch-ood for these logits
    theirs = -Entropy(None).predict_logits(torch.from_numpy(both)).numpy()
    ours = get_scorer("entropy").fit().score(both)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert abs(_auroc(ours[:200], ours[200:]) - _auroc(theirs[:200], theirs[200:])) < 1e-6
    # a saturated row: pytorch-ood clips p = e^-30 / (1 + 2 e^-30) to 1e-7; ours is exact
    a = 30.0
    row = np.array([[a, 0.0, 0.0]])
    log_rest = -(a + np.log1p(2 * np.exp(-a)))  # log p of the two small classes
    log_top = -np.log1p(2 * np.exp(-a))
    exact = np.exp(log_top) * log_top + 2 * np.exp(log_rest) * log_rest
    np.testing.assert_allclose(get_scorer("entropy").fit().score(row), [exact], rtol=1e-12)
    clipped = -Entropy(None).predict_logits(torch.from_numpy(row)).numpy()
    assert abs(clipped[0] - exact) > 0.1 * abs(exact)


# --------------------------------------------------------------------------------- tempscale
def test_tempscale_fits_the_nll_minimum():
    fit, y, test, ood = _problem(2)
    s = get_scorer("tempscale").fit(fit, y)
    # independent: a bounded scalar search over log T
    res = minimize_scalar(
        lambda lt: _nll(fit, y, np.exp(lt)),
        bounds=(-4, 4),
        method="bounded",
        options={"xatol": 1e-10},
    )
    np.testing.assert_allclose(s.T_, np.exp(res.x), rtol=1e-6)
    # closed-form optimality: d NLL / d(1/T) = mean(E_p[l] - l_y) = 0 at T_
    p = softmax(fit / s.T_, axis=1)
    assert abs(np.mean(np.sum(p * fit, axis=1) - fit[np.arange(len(y)), y])) < 1e-10
    np.testing.assert_allclose(s.score(test), softmax(test / s.T_, axis=1).max(1), rtol=1e-12)


def test_tempscale_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import TemperatureScaling

    fit, y, test, ood = _problem(3)
    det = TemperatureScaling(None).fit_logits(torch.from_numpy(fit), torch.from_numpy(y))
    t_theirs = float(det.t.item())
    ours = get_scorer("tempscale").fit(fit, y)
    # pytorch-ood stops L-BFGS (lr 0.01) after 50 iterations: short of the optimum we find,
    # but on its way there from T = 1, with a larger NLL
    assert min(1.0, ours.T_) <= t_theirs <= max(1.0, ours.T_)
    assert _nll(fit, y, ours.T_) <= _nll(fit, y, t_theirs)
    # at the same T both compute the same score
    both = np.vstack([test, ood])
    theirs = -det.predict_logits(torch.from_numpy(both)).detach().numpy()
    fixed = get_scorer("tempscale", T=t_theirs).fit().score(both)
    np.testing.assert_allclose(fixed, theirs, rtol=1e-12)
    assert abs(_auroc(fixed[:200], fixed[200:]) - _auroc(theirs[:200], theirs[200:])) < 1e-6


def test_tempscale_fixed_T_and_clamping():
    fit, y, test, ood = _problem(4)
    s = get_scorer("tempscale", T=2.0).fit()  # fixed T: no labels, no fit logits needed
    np.testing.assert_allclose(s.score(test), softmax(test / 2.0, axis=1).max(1), rtol=1e-12)
    np.testing.assert_allclose(
        get_scorer("tempscale", T=1.0).fit().score(test),
        get_scorer("msp").fit().score(test),
        rtol=1e-12,
    )
    sep = 50.0 * np.eye(5)[y] + 0.01 * fit  # separable: the NLL falls as T -> 0
    with pytest.warns(UserWarning, match="outside T in"):
        s = get_scorer("tempscale").fit(sep, y)
    assert s.T_ == 0.01 and s.clamped_
    with pytest.raises(ScoringError, match="labels"):
        get_scorer("tempscale").fit(fit)
    with pytest.raises(ScoringError, match="T must be > 0"):
        get_scorer("tempscale", T=0)


# --------------------------------------------------------------------------------------- klm
def _klm_numpy(fit, test):
    p_fit = softmax(fit, axis=1)
    pred = p_fit.argmax(1)
    templates = np.stack([p_fit[pred == k].mean(0) for k in np.unique(pred)])
    p = softmax(test, axis=1)
    kl = np.sum(p[:, None, :] * (np.log(p[:, None, :]) - np.log(templates[None])), axis=2)
    return -kl.min(axis=1)


def test_klm_numpy_and_limits():
    fit, y, test, ood = _problem(5)
    s = get_scorer("klm").fit(fit)
    np.testing.assert_allclose(s.score(test), _klm_numpy(fit, test), rtol=1e-10, atol=1e-13)
    assert len(s.classes_) == 5
    # a class whose fit rows are all the same posterior: that row matches its template, KL = 0
    same = np.tile([4.0, 0.0, 0.0, 0.0, 0.0], (10, 1))
    other = np.tile([0.0, 3.0, 0.0, 1.0, 0.0], (10, 1))
    s = get_scorer("klm").fit(np.vstack([same, other]))
    np.testing.assert_allclose(s.score(np.vstack([same[:1], other[:1]])), [0.0, 0.0], atol=1e-14)
    assert s.score(np.zeros((1, 5)))[0] < 0


def test_klm_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import KLMatching

    fit, y, test, ood = _problem(6)
    det = KLMatching(None).fit_logits(torch.from_numpy(fit))
    both = np.vstack([test, ood])
    theirs = -det.predict_logits(torch.from_numpy(both)).numpy()
    ours = get_scorer("klm").fit(fit).score(both)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)
    assert abs(_auroc(ours[:200], ours[200:]) - _auroc(theirs[:200], theirs[200:])) < 1e-6


def test_klm_underflowing_templates_stay_finite():
    # class-0 templates hold probabilities that underflow (e^-900): log d_k stays finite
    fit = np.array([[0.0, -900.0, -900.0], [0.0, -800.0, -950.0], [-5.0, 0.0, -1.0]])
    s = get_scorer("klm").fit(fit)
    assert np.isfinite(s.log_templates_).all()
    out = s.score(np.array([[0.0, 0.0, 0.0], [0.0, -850.0, -920.0], [3.0, 2.0, 1.0]]))
    assert np.isfinite(out).all() and out[1] > out[0]


# ------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", NEW)
def test_contract(name):
    fit, y, test, ood = _problem(7)
    s = get_scorer(name)
    assert s.input == "logits" and not s.needs_head and not s.default and s.paper
    assert isinstance(s.grid, dict)
    with pytest.raises(ScoringError, match="not fitted"):
        s.score(test)
    s.fit(fit, y)
    out = s.score(test)
    assert out.dtype == np.float64 and out.shape == (200,) and np.isfinite(out).all()
    s.batch_size = 7
    np.testing.assert_allclose(s.score(test), out, rtol=1e-12, atol=1e-15)
    bad = test.copy()
    bad[[1, 50]] = np.nan
    with pytest.raises(ScoringError, match="2 of 200 rows"):
        s.score(bad)
    with pytest.raises(ScoringError, match="width"):
        s.score(np.ones((2, 4)))
    assert np.isfinite(s.score(np.array([[1e4, 0, 0, 0, -1e4], [-3e3] * 5]))).all()
