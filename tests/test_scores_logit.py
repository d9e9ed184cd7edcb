"""Logit scorers against numpy formulas and pytorch-ood's detectors (outlier score = -ours)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from ncprobe.errors import ScoringError
from ncprobe.scores import get_scorer


def _logits(n=300, c=10, scale=3.0, seed=0):
    return scale * np.random.default_rng(seed).standard_normal((n, c))


def _score(name, logits, **params):
    return get_scorer(name, **params).fit().score(logits)


def test_numpy_formulas():
    x = _logits()
    np.testing.assert_allclose(_score("msp", x), softmax(x, axis=1).max(1), rtol=1e-12)
    np.testing.assert_allclose(_score("maxlogit", x), x.max(1), rtol=0)
    np.testing.assert_allclose(_score("energy", x), logsumexp(x, axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        _score("energy", x, T=2.5), 2.5 * logsumexp(x / 2.5, axis=1), rtol=1e-12
    )
    p = softmax(x, axis=1)
    want = -np.sum(p**0.1 * (1 - p) ** 0.1, axis=1)  # M = 100 > C: all classes
    np.testing.assert_allclose(_score("gen", x), want, rtol=1e-12)
    top3 = np.sort(p, axis=1)[:, -3:]
    want3 = -np.sum(top3**0.5 * (1 - top3) ** 0.5, axis=1)
    np.testing.assert_allclose(_score("gen", x, gamma=0.5, M=3), want3, rtol=1e-12)


def test_huge_logits_stay_finite():
    x = np.array([[1e4, 0.0, -1e4], [-5e3, -5e3, -5e3]])
    for name in ("msp", "maxlogit", "energy", "gen"):
        s = _score(name, x)
        assert np.isfinite(s).all(), name
    np.testing.assert_allclose(_score("msp", x), [1.0, 1 / 3])
    np.testing.assert_allclose(_score("energy", x), [1e4, -5e3 + np.log(3)])


def test_against_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    import torch
    from pytorch_ood.detector import GEN, EnergyBased, MaxLogit, MaxSoftmax

    x = _logits(scale=2.0)
    t = torch.from_numpy(x)  # float64 on both sides: exact agreement
    np.testing.assert_allclose(
        _score("msp", x), -MaxSoftmax(None).predict_logits(t).numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(
        _score("maxlogit", x), -MaxLogit(None).predict_logits(t).numpy(), rtol=0
    )
    np.testing.assert_allclose(
        _score("energy", x), -EnergyBased(None).predict_logits(t).numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(
        _score("energy", x, T=3.0), -EnergyBased(None, t=3.0).predict_logits(t).numpy(), rtol=1e-12
    )
    # pytorch-ood's GEN averages the top-M terms (ours sums, as the paper) and clamps p to
    # [1e-7, 1 - 1e-7]; with these logits no probability is clamped, so ours = -M * theirs.
    p = softmax(x, axis=1)
    assert p.min() > 1e-7 and p.max() < 1 - 1e-7
    for m in (10, 4):
        theirs = GEN(None, gamma=0.1, M=m).predict_logits(t).numpy()
        np.testing.assert_allclose(_score("gen", x, M=m), -m * theirs, rtol=1e-12)


def test_logit_errors():
    with pytest.raises(ScoringError, match="T must be > 0"):
        get_scorer("energy", T=0)
    with pytest.raises(ScoringError, match="gamma > 0"):
        get_scorer("gen", gamma=-1)
    s = get_scorer("msp").fit(_logits(c=5))
    with pytest.raises(ScoringError, match="width 3"):
        s.score(np.ones((2, 3)))
