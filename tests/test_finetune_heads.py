"""Heads of ncprobe.finetune: frozen ETF projector, L2-normalized features, head reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ncprobe.errors import NcprobeError
from ncprobe.models.nc_heads import (
    MODES,
    L2Normalize,
    NCModel,
    etf_weight,
    make_etf_projector,
    wrap_model,
)


class Tiny(nn.Module):
    def __init__(self, num_classes=4, d=6):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, d, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = nn.Linear(d, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def _classifier_input(model, x):
    seen = {}
    h = model.classifier.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0].detach()))
    model(x)
    h.remove()
    return seen["x"]


def _etf_reference(rows, cols, c):
    return np.sqrt(c / (c - 1)) * (np.eye(rows, cols) - np.ones((rows, cols)) / c)


def test_etf_weight_closed_form():
    for rows, cols, c in [(16, 5, 5), (5, 16, 5), (7, 7, 7)]:
        w = etf_weight(rows, cols, c).numpy()
        np.testing.assert_allclose(w, _etf_reference(rows, cols, c), rtol=1e-6, atol=1e-7)
    # square case: sqrt(c/(c-1)) times the centering matrix, whose columns have zero mean
    np.testing.assert_allclose(etf_weight(7, 7, 7).numpy().sum(axis=0), 0.0, atol=1e-6)
    with pytest.raises(NcprobeError):
        etf_weight(4, 1, 1)


def test_projector_frozen_closed_form_and_unchanged_after_step():
    torch.manual_seed(0)
    model = wrap_model(Tiny(d=6), "head", "etf", 4, projector_dim=16)
    p0, p2 = model.projector[0], model.projector[2]
    assert p0.bias is None and p2.bias is None
    assert not p0.weight.requires_grad and not p2.weight.requires_grad
    np.testing.assert_allclose(p0.weight.numpy(), _etf_reference(16, 6, 6), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(p2.weight.numpy(), _etf_reference(6, 16, 6), rtol=1e-6, atol=1e-7)
    # saved with the model
    sd = model.state_dict()
    assert "projector.0.weight" in sd and "projector.2.weight" in sd
    before = {k: v.clone() for k, v in sd.items()}
    # an optimizer over *all* parameters still cannot move them (no grad)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9, weight_decay=0.1)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    after = model.state_dict()
    assert torch.equal(after["projector.0.weight"], before["projector.0.weight"])
    assert torch.equal(after["projector.2.weight"], before["projector.2.weight"])
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])  # the rest trains


def test_etf_forward_matches_numpy():
    torch.manual_seed(1)
    model = wrap_model(Tiny(d=6), "head", "etf", 4, projector_dim=16).eval()
    x = torch.randn(5, 3, 8, 8)
    h = model.encoder(x).detach().double().numpy()
    z = np.maximum(h @ _etf_reference(16, 6, 6).T, 0) @ _etf_reference(6, 16, 6).T
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose(_classifier_input(model, x).double().numpy(), u, rtol=1e-4, atol=1e-5)
    w, b = model.classifier.weight.detach().double().numpy(), model.classifier.bias.detach().double().numpy()
    np.testing.assert_allclose(model(x).detach().double().numpy(), u @ w.T + b, rtol=1e-4, atol=1e-5)


def test_l2_features_have_unit_norm_and_scale():
    torch.manual_seed(0)
    x = torch.randn(7, 3, 8, 8) * 5
    model = wrap_model(Tiny(), "head", "l2", 4)
    feats = _classifier_input(model, x).numpy()
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    h = model.encoder(x).detach().numpy()
    np.testing.assert_allclose(feats, h / np.linalg.norm(h, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    scaled = wrap_model(Tiny(), "head", "l2", 4, l2_scale=3.0)
    np.testing.assert_allclose(np.linalg.norm(_classifier_input(scaled, x).numpy(), axis=1), 3.0, rtol=1e-5)
    learned = wrap_model(Tiny(), "head", "l2", 4, l2_scale=2.0, learn_scale=True)
    assert isinstance(learned.norm.scale, nn.Parameter) and learned.norm.scale.item() == 2.0


def test_l2normalize_zero_vector_is_finite():
    out = L2Normalize()(torch.zeros(2, 3))
    assert torch.isfinite(out).all()


def test_ce_keeps_original_head_and_replaces_when_classes_change():
    torch.manual_seed(0)
    base = Tiny(num_classes=4)
    w = base.head.weight.detach().clone()
    model = wrap_model(base, "head", "ce", 4)
    assert torch.equal(model.classifier.weight, w)
    assert isinstance(model.encoder.head, nn.Identity)
    x = torch.randn(3, 3, 8, 8)
    np.testing.assert_allclose(model.encoder(x).detach().numpy(), model.embed(x).detach().numpy())
    other = wrap_model(Tiny(num_classes=4), "head", "entropy", 7)
    assert other.classifier.out_features == 7 and other.classifier.in_features == 6


def test_forward_with_embedding_matches_forward():
    torch.manual_seed(0)
    for mode in MODES:
        model = wrap_model(Tiny(), "head", mode, 4, projector_dim=8).eval()
        x = torch.randn(3, 3, 8, 8)
        logits, h = model.forward_with_embedding(x)
        assert torch.allclose(logits, model(x))
        assert torch.allclose(h, model.encoder(x))


def test_rewrap_ncmodel_reuses_encoder():
    first = wrap_model(Tiny(), "head", "ce", 4)
    again = wrap_model(first, "classifier", "etf", 4, projector_dim=8)
    assert isinstance(again, NCModel) and again.encoder is first.encoder
    assert again.classifier.in_features == 6 and not isinstance(again.encoder, NCModel)


def test_bad_mode_lists_modes():
    with pytest.raises(NcprobeError, match="etf\\+entropy"):
        wrap_model(Tiny(), "head", "nc", 4)
    with pytest.raises(NcprobeError, match="no module"):
        wrap_model(Tiny(), "fc", "ce", 4)


def test_make_etf_projector_dims():
    proj = make_etf_projector(5, 12)
    assert proj[0].weight.shape == (12, 5) and proj[2].weight.shape == (5, 12)
