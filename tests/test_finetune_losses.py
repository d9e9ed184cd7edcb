"""KoLeo entropy regularizer and the combined fine-tuning loss, against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprobe.errors import NcprobeError
from ncprobe.finetune.losses import NCLoss, default_label_smoothing, entropy_term, koleo_loss


def _koleo_numpy(u):
    b = len(u)
    total = 0.0
    for i in range(b):
        best = np.inf
        for j in range(b):
            if j != i:
                best = min(best, np.sqrt(((u[i] - u[j]) ** 2).sum()))
        total += np.log(best + 1e-8)
    return -total / b


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_koleo_matches_numpy_bruteforce():
    rng = np.random.default_rng(0)
    for b, d in [(2, 3), (9, 5), (40, 16)]:
        u = _unit(rng.normal(size=(b, d)))
        got = koleo_loss(torch.from_numpy(u)).item()
        assert got == pytest.approx(_koleo_numpy(u), rel=1e-10, abs=1e-10)
        got32 = koleo_loss(torch.from_numpy(u).float()).item()
        assert got32 == pytest.approx(_koleo_numpy(u), rel=1e-4)


def test_entropy_term_normalizes_first():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(12, 7)) * rng.uniform(0.1, 10, size=(12, 1))
    assert entropy_term(torch.from_numpy(h)).item() == pytest.approx(_koleo_numpy(_unit(h)), rel=1e-10)


def test_koleo_duplicates_finite_loss_and_grad():
    u = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    u[1] = u[0]
    u.requires_grad_(True)
    loss = koleo_loss(u)
    loss.backward()
    # duplicate pair: distance 0 -> log(1e-8) contributes for both samples
    rest = _koleo_numpy(u.detach().numpy())
    assert loss.item() == pytest.approx(rest, rel=1e-10)
    assert torch.isfinite(u.grad).all()


def test_koleo_gradcheck():
    u = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(koleo_loss, (u,))


def test_koleo_single_sample_is_zero():
    assert koleo_loss(torch.ones(1, 3)).item() == 0.0


def _ce_numpy(logits, y, eps):
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    c = logits.shape[1]
    target = np.full_like(logits, eps / c)
    target[np.arange(len(y)), y] += 1 - eps
    return float(-(target * logp).sum(1).mean())


def test_ncloss_matches_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(10, 4))
    h = rng.normal(size=(10, 6))
    y = rng.integers(0, 4, 10)
    lt, ht, yt = torch.from_numpy(logits), torch.from_numpy(h), torch.from_numpy(y)
    ce = NCLoss("ce")(lt, ht, yt).item()
    assert ce == pytest.approx(_ce_numpy(logits, y, 0.0), rel=1e-6)
    etf = NCLoss("etf")(lt, ht, yt).item()
    assert etf == pytest.approx(_ce_numpy(logits, y, 0.1), rel=1e-6)
    full = NCLoss("etf+entropy", alpha=0.05)(lt, ht, yt).item()
    assert full == pytest.approx(_ce_numpy(logits, y, 0.1) + 0.05 * _koleo_numpy(_unit(h)), rel=1e-6)
    ent = NCLoss("entropy", alpha=0.3, label_smoothing=0.2)(lt, ht, yt).item()
    assert ent == pytest.approx(_ce_numpy(logits, y, 0.2) + 0.3 * _koleo_numpy(_unit(h)), rel=1e-6)


def test_default_label_smoothing():
    assert [default_label_smoothing(m) for m in ("ce", "l2", "etf", "entropy", "etf+entropy")] == [0, 0, 0.1, 0, 0.1]
    with pytest.raises(NcprobeError):
        default_label_smoothing("bogus")
