"""Per-layer cache entries: a run on a subset of the cached layers runs no forward pass, and one on
a superset runs the network for the new layers only; either way the features (and their order)
equal a fresh extraction."""

from __future__ import annotations

import numpy as np
import pytest

from ncprobe.features import extract as ex
from ncprobe.features import extract_features
from ncprobe.features.probe_points import ALL
from tests.helpers import TinyNet, make_checkpoint, make_source


@pytest.fixture
def recorded(monkeypatch):
    """The probe points each forward pass captured, in call order."""
    calls = []
    real = ex._forward

    def spy(group, *args, **kwargs):
        calls.append([list(job.names) for _, job in group])
        return real(group, *args, **kwargs)

    monkeypatch.setattr(ex, "_forward", spy)
    return calls


def _fresh(ckpt, src, layers):
    return extract_features(ckpt, src, layers, use_cache=False, progress=False)


def _equal(a, b):
    assert a.layers == b.layers
    for layer in a.layers:
        np.testing.assert_array_equal(a[layer], b[layer])
    np.testing.assert_array_equal(a.labels, b.labels)


def test_subset_of_cached_layers_is_read_without_a_forward_pass(tmp_path, recorded):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1", "stage2"], sha="e" * 64)
    src = make_source(n=12)
    full = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    assert full.layers == ["stage1", "stage2", "penultimate", "logits"] and len(recorded) == 1
    part = extract_features(ckpt, src, "stage2", cache_dir=tmp_path, progress=False)
    assert part.from_cache and len(recorded) == 1  # no second forward pass
    _equal(part, _fresh(ckpt, src, "stage2"))


def test_superset_runs_the_network_for_the_new_layers_only(tmp_path, recorded):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage2"], sha="f" * 64)
    src = make_source(n=12)
    extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    more = extract_features(ckpt, src, "stage1,stage1.0,stage2", cache_dir=tmp_path, progress=False)
    assert len(recorded) == 2 and sorted(recorded[-1][0]) == ["stage1", "stage1.0"]  # only the layers not cached
    assert not more.from_cache and more.meta["cached_layers"] == ["logits", "penultimate", "stage2"]
    _equal(more, _fresh(ckpt, src, "stage1,stage1.0,stage2"))  # same arrays, same (forward) order
    passes = len(recorded)
    again = extract_features(ckpt, src, "stage1,stage1.0,stage2", cache_dir=tmp_path, progress=False)
    assert again.from_cache and len(recorded) == passes
    _equal(again, more)


def test_every_module_run_is_served_from_the_cache_the_second_time(tmp_path, recorded):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1"], sha="a1" * 32)
    src = make_source(n=8)
    first = extract_features(ckpt, src, ALL, cache_dir=tmp_path, progress=False)
    second = extract_features(ckpt, src, ALL, cache_dir=tmp_path, progress=False)
    assert second.from_cache and len(recorded) == 1
    _equal(second, first)
    _equal(first, _fresh(ckpt, src, ALL))


def test_firing_order_puts_containers_after_their_children_and_logits_last():
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1"])
    order = ex.firing_order(ckpt)
    assert order["stage1.0"] < order["stage1.2"] < order["stage1"] < order["stage2"] < order["penultimate"]
    assert order["penultimate"] < order["head"] < order["logits"] == max(order.values())


def test_float16_storage_is_the_float32_features_rounded_and_keyed_apart(tmp_path):
    ckpt = make_checkpoint(TinyNet(4), "head", ["stage1", "stage2"], sha="b2" * 32)
    src = make_source(n=10)
    half = extract_features(ckpt, src, cache_dir=tmp_path, progress=False, dtype="float16")
    full = extract_features(ckpt, src, cache_dir=tmp_path, progress=False)
    assert not full.from_cache  # another dtype, another entry
    for layer in full.layers:
        assert half[layer].dtype == np.float16 and full[layer].dtype == np.float32
        np.testing.assert_array_equal(half[layer], full[layer].astype(np.float16))
    assert extract_features(ckpt, src, cache_dir=tmp_path, progress=False, dtype="float16").from_cache


def test_float16_overflow_is_a_one_line_error(tmp_path):
    import torch

    net = TinyNet(4)
    with torch.no_grad():
        net.head.bias.fill_(1e6)  # logits far beyond float16's 65504
    ckpt = make_checkpoint(net, "head", ["stage1"])
    with pytest.raises(ex.NcprobeError, match="float16's range.*--cache-dtype float32"):
        extract_features(ckpt, make_source(n=6), use_cache=False, progress=False, dtype="float16")
    with pytest.raises(ex.NcprobeError, match="unknown feature dtype"):
        extract_features(ckpt, make_source(n=6), use_cache=False, progress=False, dtype="int8")


def test_memory_mapped_entries_are_verified_before_they_are_mapped(tmp_path, monkeypatch):
    """Over a sixteenth of the memory budget an entry's array is mapped, not read: a flipped byte in
    its data or a truncated file is still found (CRC and digest are checked in chunks first)."""
    from ncprobe.features import cache as fc
    from ncprobe.features.featureset import FeatureSet

    monkeypatch.setenv("NCPROBE_MEMORY_BUDGET", "64K")  # maps anything over 16 MiB (the read chunk)
    x = np.random.default_rng(0).standard_normal((4200, 1024)).astype(np.float32)  # 17.2 MB
    fs = FeatureSet(name="a", layers=["l"], features={"l": x}, labels=np.arange(4200) % 3)
    key = "ab" * 16
    path = fc.save(tmp_path, key, fs)
    got, state = fc.lookup(tmp_path, key, "a")
    assert state == fc.HIT and isinstance(got["l"], np.memmap) and np.array_equal(got["l"], x)
    del got
    data = bytearray(path.read_bytes())
    good = bytes(data)
    data[len(data) // 2] ^= 0x10  # inside the array's bytes
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        assert fc.lookup(tmp_path, key, "a") == (None, fc.DAMAGED)
    path.write_bytes(good[: len(good) - 1000])  # truncated
    with pytest.warns(UserWarning, match="damaged"):
        assert fc.lookup(tmp_path, key, "a") == (None, fc.DAMAGED)
