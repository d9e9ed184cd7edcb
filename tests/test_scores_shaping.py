"""ReAct, VRA, ASH-P/B/S, SCALE and DICE against numpy formulas and pytorch-ood (outlier = -ours)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer
from ncprobe.scores.shaping import top_k_mask
from tests.helpers import assert_head_scorer_contract, head_problem

NEW = ("react", "vra", "ash_p", "ash_b", "ash_s", "scale", "dice")


def _problem(seed=0, n=300, d=32, c=5):
    return head_problem(seed, n, d, c)


def _auroc(scores):
    return roc_auc_score(np.r_[np.ones(200), np.zeros(200)], scores)


def _energy(z, w, b):
    return logsumexp(z @ w.T + b, axis=1)


def _keep_top(z, k):
    """Independent top-k by sorting each row (stable: equal values keep the lower index)."""
    out = np.zeros(z.shape, dtype=bool)
    for i, row in enumerate(z):
        out[i, np.argsort(-row, kind="stable")[:k]] = True
    return out


def _score(name, x, y, w, b, z, **params):
    return get_scorer(name, **params).fit(x, y, head=(w, b)).score(z)


# ------------------------------------------------------------------------------ numpy formulas
def test_react_and_vra_numpy():
    x, y, w, b, z = _problem()
    for p in (90, 99):
        c = np.percentile(x.ravel(), p)
        np.testing.assert_allclose(
            _score("react", x, y, w, b, z, percentile=p),
            _energy(np.minimum(z, c), w, b),
            rtol=1e-12,
        )
    lo, hi = np.percentile(x, 60, axis=0), np.percentile(x, 90, axis=0)
    v = np.where(z < lo, 0.0, np.minimum(z, hi))
    np.testing.assert_allclose(_score("vra", x, y, w, b, z), _energy(v, w, b), rtol=1e-12)


def test_ash_and_scale_numpy():
    x, y, w, b, z = _problem(1)
    d = z.shape[1]
    for p in (65, 90):
        k = d - int(np.round(d * p / 100))
        m = _keep_top(z, k)
        s1 = z.sum(1)
        s2 = (z * m).sum(1)
        np.testing.assert_allclose(
            _score("ash_p", x, y, w, b, z, percentile=p), _energy(z * m, w, b), rtol=1e-12
        )
        np.testing.assert_allclose(
            _score("ash_b", x, y, w, b, z, percentile=p),
            _energy(m * (s1 / k)[:, None], w, b),
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            _score("ash_s", x, y, w, b, z, percentile=p),
            _energy(z * m * np.exp(s1 / s2)[:, None], w, b),
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            _score("scale", x, y, w, b, z, percentile=p),
            _energy(z * np.exp(s1 / s2)[:, None], w, b),
            rtol=1e-12,
        )


def test_dice_numpy():
    x, y, w, b, z = _problem(2)
    for p in (90, 50):
        contrib = w * x.mean(0)
        wm = np.where(contrib > np.percentile(contrib.ravel(), p), w, 0.0)
        s = get_scorer("dice", p=p).fit(x, head=(w, b))
        np.testing.assert_allclose(s.score(z), _energy(z, wm, b), rtol=1e-12)
        assert abs((1 - s.mask_.mean()) - p / 100) <= 1 / w.size  # p% of the weights dropped


# --------------------------------------------------------------------------- limiting cases
def test_limits_reduce_to_energy():
    x, y, w, b, z = _problem(3)
    inside = z[np.all((z >= x.min(0)) & (z <= x.max(0)), axis=1)]
    assert len(inside) > 20
    plain = _energy(inside, w, b)
    # ReAct at the 100th percentile clips at the largest fit activation: nothing below it changes
    np.testing.assert_allclose(
        _score("react", x, y, w, b, inside, percentile=100), plain, rtol=1e-12
    )
    # VRA with the per-unit min/max: rows inside the fit range are unchanged
    np.testing.assert_allclose(
        _score("vra", x, y, w, b, inside, low=0, high=100), plain, rtol=1e-12
    )
    # percentile 0 keeps every activation: ASH-P is the plain energy, ASH-S and SCALE scale by e
    np.testing.assert_allclose(
        _score("ash_p", x, y, w, b, z, percentile=0), _energy(z, w, b), rtol=1e-12
    )
    for name in ("ash_s", "scale"):
        np.testing.assert_allclose(
            _score(name, x, y, w, b, z, percentile=0), _energy(np.e * z, w, b), rtol=1e-12
        )


def test_ash_b_preserves_the_sum_and_zero_rows_give_the_bias_energy():
    x, y, w, b, z = _problem(4)
    s = get_scorer("ash_b").fit(x, head=(w, b))
    np.testing.assert_allclose(s._shape(z).sum(1), z.sum(1), rtol=1e-12)
    assert (np.count_nonzero(s._shape(z), axis=1) == s.k_).all()
    zero = np.zeros((1, z.shape[1]))
    for name in ("ash_p", "ash_b", "ash_s", "scale"):  # s2 = 0: left unscaled, logits = b
        np.testing.assert_allclose(_score(name, x, y, w, b, zero), [logsumexp(b)], rtol=1e-12)


def test_top_k_mask_ties_keep_lowest_indices():
    a = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    got = top_k_mask(a, 2)
    assert got.tolist() == [
        [False, True, True, False, False],
        [True, True, False, False, False],
        [True, True, False, False, False],
    ]
    rng = np.random.default_rng(0)
    r = rng.integers(0, 4, (50, 9)).astype(float)  # many ties
    for k in (1, 4, 9):
        np.testing.assert_array_equal(top_k_mask(r, k), _keep_top(r, k))


# ------------------------------------------------------------------------------- pytorch-ood
def _torch_head(w, b):
    import torch

    wt, bt = torch.from_numpy(w), torch.from_numpy(b)
    return lambda t: t.flatten(1) @ wt.T + bt  # float64, for (B, d) and (B, d, 1, 1) inputs


def test_react_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import ReAct

    x, y, w, b, z = _problem(5)
    det = ReAct(backbone=None, head=_torch_head(w, b), percentile=0.9)
    det.fit_feature_maps(torch.from_numpy(x), torch.from_numpy(y))
    theirs = -det.predict_feature_maps(torch.from_numpy(z)).numpy()
    s = get_scorer("react").fit(x, head=(w, b))
    assert s.threshold_ == det.threshold
    ours = s.score(z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


@pytest.mark.parametrize(
    "name,variant,p",
    [
        ("ash_p", "ash-p", 90),
        ("ash_b", "ash-b", 90),
        ("ash_s", "ash-s", 90),
        ("ash_s", "ash-s", 65),
    ],
)
def test_ash_against_pytorch_ood_on_pooled_features(name, variant, p):
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import ASH

    x, y, w, b, z = _problem(6)
    det = ASH(backbone=None, head=_torch_head(w, b), variant=variant, percentile=p / 100)
    # pooled features as (B, d, 1, 1) maps: the placement ncprobe (and OpenOOD v1.5) use
    theirs = -det.predict_feature_maps(torch.from_numpy(z)[:, :, None, None]).numpy()
    ours = _score(name, x, y, w, b, z, percentile=p)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


def test_scale_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import SCALE

    x, y, w, b, z = _problem(7)
    det = SCALE(backbone=None, head=_torch_head(w, b), percentile=0.85)
    theirs = -det.predict_feature_maps(torch.from_numpy(z)[:, :, None, None]).numpy()
    ours = _score("scale", x, y, w, b, z)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


def test_dice_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import DICE

    x, y, w, b, z = _problem(8)
    det = DICE(None, w=torch.from_numpy(w), b=torch.from_numpy(b), p=0.9)
    det.fit_features(torch.from_numpy(x), torch.from_numpy(y))
    theirs = -det.predict_features(torch.from_numpy(z)).double().numpy()
    s = get_scorer("dice").fit(x, head=(w, b))
    np.testing.assert_array_equal(s.mask_, det.masked_w.numpy() != 0)
    ours = s.score(z)
    # pytorch-ood fits in float32 (its masked weights are float32): agreement to float32 precision
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * np.abs(ours).max())
    assert abs(_auroc(ours) - _auroc(theirs)) < 1e-6


def test_vra_differs_from_pytorch_ood_below_the_low_threshold():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import VRA

    x, y, w, b, z = _problem(9)
    det = VRA(backbone=None, head=_torch_head(w, b), lower_percentile=0.6, upper_percentile=0.9)
    det.fit_feature_maps(torch.from_numpy(x), torch.from_numpy(y))
    s = get_scorer("vra").fit(x, head=(w, b))
    # same per-unit thresholds (theirs stored in float32)
    np.testing.assert_allclose(det._lower_threshold.double().numpy(), s.lower_, rtol=1e-6)
    np.testing.assert_allclose(det._upper_threshold.double().numpy(), s.upper_, rtol=1e-6)
    z = z.copy()
    z[::2] = np.maximum(z[::2], s.lower_ * (1 + 1e-6))  # half the rows: no unit below the low cut
    theirs = -det.predict_feature_maps(torch.from_numpy(z)).double().numpy()
    ours = s.score(z)
    # the paper zeroes activations below the low threshold, pytorch-ood clips them up to it:
    # equal (to float32 precision) only on the rows with none below
    none_below = np.all(z >= s.lower_, axis=1)
    assert 0 < none_below.sum() < len(z)
    np.testing.assert_allclose(
        ours[none_below], theirs[none_below], rtol=1e-5, atol=1e-6 * np.abs(ours).max()
    )
    assert np.all(np.abs(ours[~none_below] - theirs[~none_below]) > 1e-4)


# ------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", NEW)
def test_contract(name):
    assert_head_scorer_contract(name, *_problem(10))


def test_parameter_checks():
    x, y, w, b, z = _problem(11)
    with pytest.raises(ScoringError, match="percentile"):
        get_scorer("react", percentile=120)
    with pytest.raises(ScoringError, match="0 <= p < 100"):
        get_scorer("ash_b", percentile=100)
    with pytest.raises(ScoringError, match="low <= high"):
        get_scorer("vra", low=95, high=90)
    with pytest.raises(ScoringError, match="keeps no activation"):
        get_scorer("ash_p", percentile=99).fit(x[:, :20], head=(w[:, :20], b))
