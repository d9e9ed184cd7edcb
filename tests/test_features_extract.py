"""Per-layer extraction: captured tensors equal what the model computes, captured by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprobe.errors import NcprobeError
from ncprobe.features import extract_features, pool, resolve_layers
from tests.helpers import TinyNet, make_checkpoint, make_source, preprocess_like_ncprobe


def _by_hand(model, head_name, modules, x):
    """Run the model with hooks written here, independent of ncprobe's extractor."""
    got = {}
    handles = [model.get_submodule(m).register_forward_hook(lambda mod, i, o, m=m: got.__setitem__(m, o)) for m in modules]
    handles.append(model.get_submodule(head_name).register_forward_pre_hook(lambda mod, i: got.__setitem__("pen", i[0])))
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    return got, logits


def test_pool_reductions():
    t4 = torch.randn(2, 3, 4, 5)
    assert torch.allclose(pool(t4), t4.mean((2, 3)))
    assert torch.allclose(pool(t4.permute(0, 2, 3, 1), channels_last=True), t4.mean((2, 3)))
    t3 = torch.randn(2, 7, 6)
    assert torch.allclose(pool(t3), t3.mean(1))
    assert torch.allclose(pool(t3, tokens="cls"), t3[:, 0])
    t2 = torch.randn(2, 9)
    assert pool(t2) is t2


def test_user_model_penultimate_and_logits_match(tmp_path):
    torch.manual_seed(0)
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1", "stage2"])
    src = make_source(n=37)
    fs = extract_features(ckpt, src, batch_size=8, use_cache=False, progress=False)
    assert fs.layers == ["stage1", "stage2", "penultimate", "logits"]
    x = preprocess_like_ncprobe(src.images, ckpt.mean, ckpt.std)
    got, logits = _by_hand(ckpt.model, "head", ["stage1", "stage2"], x)
    np.testing.assert_allclose(fs["logits"], logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(fs["penultimate"], got["pen"].numpy(), atol=1e-5)
    np.testing.assert_allclose(fs["stage2"], got["stage2"].mean((2, 3)).numpy(), atol=1e-5)
    np.testing.assert_array_equal(fs.labels, src.labels)


def test_timm_model_matches():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    stages = [info["module"] for info in model.feature_info]
    ckpt = make_checkpoint(model, "fc", stages, size=32)
    src = make_source(n=10, size=32, classes=3)
    fs = extract_features(ckpt, src, batch_size=4, use_cache=False, progress=False)
    x = preprocess_like_ncprobe(src.images, ckpt.mean, ckpt.std)
    got, logits = _by_hand(model, "fc", stages, x)
    np.testing.assert_allclose(fs["logits"], logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(fs["penultimate"], got["pen"].numpy(), atol=1e-5)
    for stage in stages:
        np.testing.assert_allclose(fs[stage], got[stage].mean((2, 3)).numpy(), atol=1e-5)


def test_cifar_resnet_matches():
    from ncprobe.models.registry import create_model, get_arch

    spec = get_arch("cifar_resnet20")
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", num_classes=10)
    ckpt = make_checkpoint(model, spec.head, spec.probe_layers, size=32)
    src = make_source(n=12, size=32, classes=10)
    fs = extract_features(ckpt, src, batch_size=5, use_cache=False, progress=False)
    x = preprocess_like_ncprobe(src.images, ckpt.mean, ckpt.std)
    got, logits = _by_hand(model, spec.head, list(spec.probe_layers), x)
    np.testing.assert_allclose(fs["logits"], logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(fs["penultimate"], got["pen"].numpy(), atol=1e-5)
    assert fs.dim("penultimate") == 64


def test_all_layers_and_unknown_layer():
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1"])
    src = make_source(n=6)
    fs = extract_features(ckpt, src, layers="all", use_cache=False, progress=False)
    assert {"stage1", "stage1.0", "stage2.1", "pool", "head", "penultimate", "logits"} <= set(fs.layers)
    np.testing.assert_allclose(fs["head"], fs["logits"], atol=1e-6)
    with pytest.raises(NcprobeError, match="stage3"):
        resolve_layers(ckpt.model, "head", [], "stage3")


def test_cache_reuse_invalidation_and_repair(tmp_path):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1", "stage2"], sha="a" * 64)
    src = make_source(n=20)
    calls = []
    ckpt.model.register_forward_pre_hook(lambda m, i: calls.append(1))
    first = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    n_calls = len(calls)
    assert not first.from_cache and n_calls > 0
    second = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    assert second.from_cache and len(calls) == n_calls  # no forward pass
    for layer in first.layers:
        np.testing.assert_array_equal(first[layer], second[layer])
    # a different dataset, checkpoint or preprocessing never reuses the entry
    other = make_source(n=20, seed=1)
    assert not extract_features(ckpt, other, cache_dir=tmp_path, progress=False).from_cache
    ckpt.sha256 = "b" * 64
    assert not extract_features(ckpt, src, cache_dir=tmp_path, progress=False).from_cache
    ckpt.mean = (0.4, 0.4, 0.4)
    assert not extract_features(ckpt, src, cache_dir=tmp_path, progress=False).from_cache
    # a damaged entry is detected and rebuilt
    for f in tmp_path.glob("*.npz"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.warns(UserWarning, match="damaged"):
        again = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    assert not again.from_cache
    assert extract_features(ckpt, src, cache_dir=tmp_path, progress=False).from_cache


def test_empty_source_is_a_clear_error():
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1"])
    with pytest.raises(NcprobeError, match="empty"):
        extract_features(ckpt, make_source(n=0), use_cache=False, progress=False)


def test_unhookable_model_probes_logits_only():
    torch.manual_seed(0)
    model = TinyNet(4).eval()
    ckpt = make_checkpoint(model, "head", ["stage1"])
    ckpt.model = torch.jit.script(model)
    ckpt.hookable = False
    src = make_source(n=9)
    fs = extract_features(ckpt, src, use_cache=False, progress=False)
    assert fs.layers == ["logits"]
    with torch.no_grad():
        expected = model(preprocess_like_ncprobe(src.images, ckpt.mean, ckpt.std))
    np.testing.assert_allclose(fs["logits"], expected.numpy(), atol=1e-5)
    with pytest.raises(NcprobeError, match="scripted"):
        extract_features(ckpt, src, layers="stage1", use_cache=False, progress=False)
