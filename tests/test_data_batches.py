"""batch_loader: every sample exactly once, deterministic shuffles, item sources resized to stack."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ncprobe.data import DataSource, batch_loader, load_dataset
from ncprobe.data.items import resize_item
from ncprobe.errors import DatasetError


def _memory_source(n=23, grey=False):
    """Image i is filled with value i, label i % 4: batches reveal which samples they hold."""
    c = 1 if grey else 3
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 5, 6, c)).copy()
    return DataSource(name="toy", spec="toy", labels=np.arange(n) % 4, fingerprint="x", images=images)


def _collect(loader):
    ids, labels = [], []
    for x, y in loader:
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.ndim == 4
        assert x.is_contiguous()
        ids.extend(x[:, 0, 0, 0].tolist())
        labels.extend(y.tolist())
        # the whole image carries its id
        assert (x == x[:, :1, :1, :1]).all()
    return ids, labels


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("bs", [1, 5, 23, 64])
def test_in_memory_every_sample_once(shuffle, bs):
    src = _memory_source()
    loader = batch_loader(src, bs, shuffle=shuffle, seed=3)
    ids, labels = _collect(loader)
    assert sorted(ids) == list(range(23))
    np.testing.assert_array_equal(labels, np.asarray(ids) % 4)
    assert len(loader) == -(-23 // bs)
    if not shuffle:
        assert ids == list(range(23))


def test_shuffle_is_reproducible_and_reshuffles_each_pass():
    src = _memory_source()
    a = batch_loader(src, 4, shuffle=True, seed=7)
    b = batch_loader(src, 4, shuffle=True, seed=7)
    first_a, second_a = _collect(a)[0], _collect(a)[0]
    first_b = _collect(b)[0]
    assert first_a == first_b
    assert first_a != second_a
    assert first_a == np.random.default_rng([7, 0]).permutation(23).tolist()
    assert _collect(batch_loader(src, 4, shuffle=True, seed=8))[0] != first_a


def test_drop_last_and_grey_shape():
    src = _memory_source(grey=True)
    loader = batch_loader(src, 5, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    assert all(x.shape == (5, 1, 5, 6) for x, _ in batches)


def _folder(tmp_path, sizes):
    """Flat-colour images of different sizes; pixel value 10*i identifies image i."""
    for i, (h, w) in enumerate(sizes):
        cls = tmp_path / "imgs" / f"c{i % 2}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)).save(cls / f"{i:02d}.png")
    return load_dataset(str(tmp_path / "imgs"))


@pytest.mark.parametrize("workers", [0, 2])
def test_item_source_resized_and_complete(tmp_path, workers):
    sizes = [(10, 10), (20, 14), (7, 30), (16, 16), (12, 9)]
    ds = _folder(tmp_path, sizes)
    seen = []
    for shuffle in (False, True):
        ids = []
        for x, y in batch_loader(ds, 2, size=(8, 8), shuffle=shuffle, workers=workers):
            assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.uint8
            ids.extend((x[:, 0, 4, 4] // 10).tolist())
            for img, lab in zip(x, y, strict=True):
                assert lab.item() == (img[0, 4, 4].item() // 10) % 2
        seen.append(ids)
        assert sorted(ids) == list(range(5))
    assert seen[0] == [0, 2, 4, 1, 3]  # folder order: class c0 then c1


def test_item_sizes_must_match_without_size(tmp_path):
    ds = _folder(tmp_path, [(10, 10), (12, 10)])
    with pytest.raises(DatasetError) as info:
        list(batch_loader(ds, 2))
    assert "pass a size" in str(info.value) and "\n" not in str(info.value)


def test_resize_item_keeps_aspect_by_centre_crop():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 4:36] = 255  # bright centre, dark 4-pixel sides
    out = resize_item(img, (10, 10))
    # shorter side 20 -> 10 (width 40 -> 20), then the centre 10 columns (source 10..30): bright
    assert out.shape == (10, 10, 3) and out.min() == 255
    ref = np.asarray(Image.fromarray(img).resize((20, 10), Image.BILINEAR))[:, 5:15]
    np.testing.assert_array_equal(out, ref)
    grey = resize_item(np.zeros((6, 6, 1), np.uint8), (3, 3))
    assert grey.shape == (3, 3, 1)


def test_item_sources_and_subsets_pickle(tmp_path):
    ds = _folder(tmp_path, [(4, 4), (4, 4), (4, 4)])
    sub = ds.subset([2, 0], "[sub]")
    back = pickle.loads(pickle.dumps(sub))
    np.testing.assert_array_equal(back.image(0), ds.image(2))
