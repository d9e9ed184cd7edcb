"""OpenMax and its Weibull tail fit against scipy, a numpy transcription of the paper, pytorch-ood."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from ncprobe.scores.openmax import WeibullTail, fit_weibull


def _problem(seed=0, n=300, c=5):
    """Positive logits (OpenMax damps the top activations, so they should be positive)."""
    rng = np.random.default_rng(seed)

    def draw(m):
        y = rng.integers(0, c, m)
        lg = 4.0 + rng.standard_normal((m, c))
        lg[np.arange(m), y] += 4.0 + rng.standard_normal(m)
        return lg, y

    fit, y = draw(n)
    test, _ = draw(200)
    ood = 5.0 + 1.5 * rng.standard_normal((200, c))
    return fit, y, np.vstack([test, ood])


def _auroc(scores):
    return roc_auc_score(np.r_[np.ones(200), np.zeros(200)], scores)


def _loglik(data, k, lam):
    return stats.weibull_min.logpdf(data, k, scale=lam).sum()


def _log_lam(data, k):
    """log of the scale maximizing the likelihood at shape k: log(mean(y^k)) / k, overflow-free."""
    top = np.log(data).max()
    return top + np.log(np.mean(np.exp(k * (np.log(data) - top)))) / k


# ------------------------------------------------------------------------------ Weibull fit
def test_weibull_mle_matches_scipy_and_is_stationary():
    rng = np.random.default_rng(0)
    plain = stats.weibull_min.rvs(2.0, scale=3.0, size=50, random_state=rng)
    shifted = np.sort(5 * np.abs(rng.standard_normal(60)))[-20:] + 1e4  # a libMR-style tail
    for data in (plain, shifted):
        k, lam = fit_weibull(data)
        k_sp, _, lam_sp = stats.weibull_min.fit(data, floc=0)
        np.testing.assert_allclose([k, lam], [k_sp, lam_sp], rtol=1e-4)
        best = _loglik(data, k, lam)
        assert best >= _loglik(data, k_sp, lam_sp) - 1e-9 * abs(best)
        # closed-form MLE conditions: lam^k = mean(y^k), and the profile likelihood peaks at k
        np.testing.assert_allclose(np.log(lam), _log_lam(data, k), rtol=1e-12)
        for f in (1 - 1e-4, 1 + 1e-4):
            assert _loglik(data, k * f, np.exp(_log_lam(data, k * f))) < best
    with pytest.raises(ScoringError, match="two distinct"):
        fit_weibull([3.0, 3.0])


def test_weibull_tail_against_pytorch_ood_libnotmr():
    pytest.importorskip("pytorch_ood")
    from pytorch_ood.detector.openmax.libnotmr import LibNotMR

    rng = np.random.default_rng(1)
    dists = 10 + 5 * np.abs(rng.standard_normal(60))
    tail = np.sort(dists)[-20:]
    ours = WeibullTail(tail)
    theirs = LibNotMR(tailsize=20)
    theirs.fit_high(dists)
    assert ours.shift == 10000 - theirs.min_val
    np.testing.assert_allclose([ours.shape, ours.scale], [theirs.c, theirs.scale], rtol=1e-5)
    d = np.linspace(0, 40, 41)
    np.testing.assert_allclose(ours.cdf(d), theirs.w_score(d), rtol=1e-4, atol=1e-9)
    step = WeibullTail(np.array([2.0]))  # one distinct value: a step at it
    assert step.cdf(np.array([1.0, 2.0, 2.5])).tolist() == [0.0, 0.0, 1.0]


# ---------------------------------------------------------------------------------- OpenMax
def _openmax_numpy(s, fit, y, test, alpha, ew, cw):
    """The paper's recalibration, row by row, with the fitted Weibull parameters of ``s``."""
    correct = fit.argmax(1) == y
    out = []
    for v in test:
        ranked = np.argsort(-v)[:alpha]
        revised = v.copy()
        unknown = 0.0
        for i, c in enumerate(ranked):
            mav = fit[correct & (y == c)].mean(0)
            dist = ew * np.linalg.norm(v - mav) + cw * (
                1 - v @ mav / np.linalg.norm(v) / np.linalg.norm(mav)
            )
            m = s.models_[c]
            wscore = stats.weibull_min.cdf(dist + m.shift, m.shape, scale=m.scale)
            weight = (alpha - i) / alpha  # (alpha + 1 - rank) / alpha, rank = i + 1
            revised[c] = v[c] * (1 - weight * wscore)
            unknown += v[c] * weight * wscore
        p = softmax(np.r_[unknown, revised])
        out.append(-np.log(p[0]))
    return np.array(out)


@pytest.mark.parametrize("alpha,ew,cw", [(2, 1 / 200, 1.0), (1, 1.0, 0.0), (5, 0.5, 1.0)])
def test_openmax_matches_the_paper_row_by_row(alpha, ew, cw):
    fit, y, test = _problem()
    s = get_scorer("openmax", alpha=alpha, euclid_weight=ew, cosine_weight=cw).fit(fit, y)
    want = _openmax_numpy(s, fit, y, test, alpha, ew, cw)
    # the libMR shift makes the CDF ill-conditioned (shape k ~ 1e4 / tail spread): both evaluations
    # of it carry relative errors ~ k * 1e-16
    np.testing.assert_allclose(s.score(test), want, rtol=1e-7, atol=1e-12)
    assert s.rank_weights_.tolist() == [(alpha + 1 - r) / alpha for r in range(1, alpha + 1)]


def test_openmax_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import OpenMax

    fit, y, test = _problem(1)
    keep = (
        fit.argmax(1) == y
    )  # pytorch-ood averages every row of a class, the paper the correct ones
    fit, y = fit[keep], y[keep]
    det = OpenMax(None, tailsize=20, alpha=2, euclid_weight=1.0)
    det.fit_logits(torch.from_numpy(fit), torch.from_numpy(y))
    p_unknown = det.predict_logits(torch.from_numpy(test)).numpy()
    s = get_scorer("openmax", tailsize=20, alpha=2, euclid_weight=1.0, cosine_weight=0.0).fit(
        fit, y
    )
    ours = s.score(test)
    # the same Weibull models up to the tolerance of pytorch-ood's numerical fit (scipy's generic
    # optimizer; ours solves the likelihood equation), and ours = -log P(unknown)
    for c, model in enumerate(s.models_):
        ref = det._openmax.distributions[c]
        assert model.shift == 10000 - ref.min_val
        np.testing.assert_allclose([model.shape, model.scale], [ref.c, ref.scale], rtol=1e-4)
        tail = np.sort(np.linalg.norm(fit[y == c] - s.centers_[c], axis=1))[-20:] + model.shift
        assert _loglik(tail, model.shape, model.scale) >= _loglik(tail, ref.c, ref.scale) - 1e-9
    np.testing.assert_allclose(ours, -np.log(p_unknown), rtol=1e-3)
    assert abs(_auroc(ours) - _auroc(-p_unknown)) < 1e-3  # the shape's 3e-5 moves a pair or two
    # with pytorch-ood's Weibull parameters the two scores are the same function
    for c, model in enumerate(s.models_):
        ref = det._openmax.distributions[c]
        model.shape, model.scale = ref.c, ref.scale
    same = s.score(test)
    np.testing.assert_allclose(same, -np.log(p_unknown), rtol=1e-8)
    assert abs(_auroc(same) - _auroc(-p_unknown)) < 1e-6


def test_openmax_classes_without_a_model_count_as_unknown():
    fit, y, test = _problem(2)
    keep = y != 3
    s = get_scorer("openmax", alpha=1).fit(fit[keep], y[keep])
    assert not s.has_model_[3]
    rows = test[test.argmax(1) == 3]
    assert len(rows)
    # alpha = 1, F = 1 for the top class: its logit moves entirely to the unknown class
    revised = rows.copy()
    revised[:, 3] = 0.0
    want = -np.log(softmax(np.c_[rows[:, 3], revised], axis=1)[:, 0])
    np.testing.assert_allclose(s.score(rows), want, rtol=1e-10)


def test_openmax_score_does_not_saturate():
    fit, y, test = _problem(3)
    s = get_scorer("openmax", alpha=1).fit(fit, y)
    far = np.array([[60.0, 0, 0, 0, 0], [30.0, 0, 0, 0, 0]])  # far from every MAV: P(unknown) ~ 1
    out = s.score(far)
    assert np.all(out > 0) and out[0] < out[1]  # -log P(unknown) ~ e^-60, e^-30: still ordered


# ------------------------------------------------------------------------------ the contract
def test_contract():
    fit, y, test = _problem(4)
    s = get_scorer("openmax")
    assert s.input == "logits" and s.needs_labels and not s.needs_head and not s.default
    assert s.paper and s.grid == {}
    with pytest.raises(ScoringError, match="not fitted"):
        s.score(test)
    with pytest.raises(ScoringError, match="labels"):
        get_scorer("openmax").fit(fit)
    s.fit(fit, y)
    assert s.alpha_ == 5  # alpha 10 clamped to C
    out = s.score(test)
    assert out.dtype == np.float64 and out.shape == (400,) and np.isfinite(out).all()
    s.batch_size = 7
    np.testing.assert_allclose(s.score(test), out, rtol=1e-12)
    bad = test.copy()
    bad[[0, 9, 300]] = np.nan
    with pytest.raises(ScoringError, match="3 of 400 rows"):
        s.score(bad)
    with pytest.raises(ScoringError, match="width"):
        s.score(np.ones((2, 4)))
    with pytest.raises(ScoringError, match="tailsize"):
        get_scorer("openmax", tailsize=1)
    with pytest.raises(ScoringError, match="weights"):
        get_scorer("openmax", euclid_weight=0, cosine_weight=0)
