""".npz files, image folders, options, fingerprints and bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from ncprobe.data import fit_spec_for, load_dataset
from ncprobe.errors import DatasetError


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)
    y = np.arange(30) % 5
    path = tmp_path / "toy_test.npz"
    np.savez(path, x=x, y=y, classes=np.array(["a", "b", "c", "d", "e"]))
    return path, x, y


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_npz_round_trip(npz):
    path, x, y = npz
    ds = load_dataset(str(path))
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.labels.dtype == np.int64
    assert (ds.name, ds.classes, ds.num_classes, ds.labelled) == ("toy_test", list("abcde"), 5, True)
    assert load_dataset(f"mine={path}").name == "mine"


def test_npz_relative_to_data_root(npz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    ds = load_dataset("toy_test.npz", data_root=tmp_path)
    np.testing.assert_array_equal(ds.labels, npz[2])


def test_npz_layout_and_pixel_rules(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(4, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", x=grey, y=np.zeros(4, int))
    ds = load_dataset(str(tmp_path / "g.npz"))
    assert ds.images.shape == (4, 6, 6, 1)
    np.testing.assert_array_equal(ds.images[..., 0], grey)

    unit = rng.random((3, 5, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "f01.npz", x=unit, y=np.zeros(3, int))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "f01.npz")).images,
                                  np.rint(unit.astype(np.float64) * 255).astype(np.uint8))

    big = rng.random((3, 5, 5, 3)) * 255.0
    big[0, 0, 0, 0] = 200.0  # ensures max > 1
    np.savez(tmp_path / "f255.npz", x=big, y=np.zeros(3, int))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "f255.npz")).images, np.rint(big).astype(np.uint8))

    nchw = rng.integers(0, 256, size=(2, 3, 7, 9), dtype=np.uint8)
    np.savez(tmp_path / "nchw.npz", x=nchw, y=np.zeros(2, int))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "nchw.npz")).images, nchw.transpose(0, 2, 3, 1))

    for bad, words in [(rng.random((2, 4, 4, 3)) * 300, "pixel values span"),
                       (np.zeros((2, 4), np.uint8), "store (N, H, W, C)"),
                       (np.zeros((2, 4, 4, 5), np.uint8), "5 channels")]:
        np.savez(tmp_path / "bad.npz", x=bad, y=np.zeros(2, int))
        with pytest.raises(DatasetError) as info:
            load_dataset(str(tmp_path / "bad.npz"))
        assert words in one_line(info)


def test_npz_without_y(tmp_path):
    path = tmp_path / "nolabels.npz"
    np.savez(path, x=np.zeros((3, 4, 4, 3), np.uint8), extra=np.ones(3))
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    msg = one_line(info)
    assert "no 'y' array" in msg and "x, extra" in msg and "@unlabelled=1" in msg and str(path) in msg
    ds = load_dataset(f"{path}@unlabelled=1")
    assert not ds.labelled and ds.num_classes is None
    np.testing.assert_array_equal(ds.labels, [-1, -1, -1])


def test_npz_other_problems(tmp_path):
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path / "nox.npz"))
    assert "no 'x' array" in one_line(info)
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2, int))
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path / "short.npz"))
    assert "3 images" in one_line(info)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path / "junk.npz"))
    assert "is not a .npz archive" in one_line(info)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path / "data.csv"))
    assert ".npz" in one_line(info)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"{tmp_path / 'short.npz'}:train")
    assert "no splits" in one_line(info)


def test_options_classes_and_n(npz):
    path, x, y = npz
    ds = load_dataset(f"{path}@classes=1+3")
    keep = np.isin(y, [1, 3])
    np.testing.assert_array_equal(ds.labels, y[keep])  # labels unchanged
    np.testing.assert_array_equal(ds.images, x[keep])
    assert ds.classes == ["a", "b", "c", "d"] and ds.num_classes == 4
    assert ds.name == "toy_test@classes=1+3"

    sub = load_dataset(f"{path}@n=7,seed=3")
    idx = np.sort(np.random.default_rng(3).choice(30, 7, replace=False))
    np.testing.assert_array_equal(sub.images, x[idx])
    np.testing.assert_array_equal(sub.labels, y[idx])
    assert np.array_equal(load_dataset(f"{path}@n=7,seed=3").labels, sub.labels)
    assert not np.array_equal(load_dataset(f"{path}@n=7,seed=4").images, sub.images)
    assert len(load_dataset(f"{path}@n=1000")) == 30  # n >= size keeps everything

    both = load_dataset(f"{path}@classes=0-1,n=4")
    assert len(both) == 4 and set(both.labels) <= {0, 1}

    with pytest.raises(DatasetError) as info:
        load_dataset(f"{path}@classes=9")
    assert "5 classes" in one_line(info)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"{path}@size=3")
    assert "options for it: classes, n, seed, unlabelled" in one_line(info)


def test_fingerprint_follows_content_and_options(npz, tmp_path):
    path, x, y = npz
    fp = load_dataset(str(path)).fingerprint
    copy = tmp_path / "copy.npz"
    copy.write_bytes(path.read_bytes())
    assert load_dataset(str(copy)).fingerprint == fp  # content hash, not path
    assert load_dataset(f"{path}@n=5").fingerprint != fp
    assert load_dataset(f"{path}@classes=0-2").fingerprint != fp
    x2 = x.copy()
    x2[0, 0, 0, 0] ^= 1
    np.savez(path, x=x2, y=y)
    assert load_dataset(str(path)).fingerprint != fp


def test_large_file_fingerprint_uses_size_and_mtime(npz, monkeypatch):
    import ncprobe.data.fingerprint as fpmod

    monkeypatch.setattr(fpmod, "HASH_LIMIT", 16)
    path = npz[0]
    fp = load_dataset(str(path)).fingerprint
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_dataset(str(path)).fingerprint != fp


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_labelled(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "imgs"
    arrs = {}
    for cls, n in (("zebra", 2), ("apple", 3)):
        for j in range(n):
            a = rng.integers(0, 256, size=(10 + j, 12, 3), dtype=np.uint8)
            _save(root / cls / f"{j}.png", a)
            arrs[(cls, j)] = a
    _save(root / "apple" / "deeper" / "x.png", rng.integers(0, 256, size=(5, 5), dtype=np.uint8))
    (root / "empty_class").mkdir()
    (root / ".hidden").mkdir()
    _save(root / ".hidden" / "h.png", np.zeros((4, 4, 3), np.uint8))
    (root / "notes.txt").write_text("not an image")
    ds = load_dataset(str(root))
    assert ds.images is None and ds.name == "imgs"
    assert ds.classes == ["apple", "empty_class", "zebra"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 0, 2, 2])
    np.testing.assert_array_equal(ds.image(1), arrs[("apple", 1)])
    grey = ds.image(3)  # apple/deeper/x.png, grey -> RGB
    assert grey.shape == (5, 5, 3) and (grey[..., 0] == grey[..., 2]).all()
    np.testing.assert_array_equal(ds.image(5), arrs[("zebra", 1)])
    only = load_dataset(f"{root}@classes=2")
    np.testing.assert_array_equal(only.image(0), arrs[("zebra", 0)])


def test_image_folder_flat_empty_and_mixed(tmp_path):
    flat = tmp_path / "flat"
    for j in range(3):
        _save(flat / f"{j}.jpg", np.full((6, 6, 3), 40 * j, np.uint8))
    ds = load_dataset(str(flat))
    assert not ds.labelled and len(ds) == 3 and ds.classes is None
    assert abs(int(ds.image(2).mean()) - 80) <= 2

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path / "empty"))
    assert "no images" in one_line(info)

    _save(flat / "cls" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError) as info:
        load_dataset(str(flat))
    assert "mixes images" in one_line(info)


def test_unknown_names_and_missing_paths(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar11", data_root=tmp_path)
    msg = one_line(info)
    assert "unknown dataset 'cifar11'" in msg and "did you mean cifar10" in msg and ".npz file" in msg
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion_mnst", data_root=tmp_path)
    assert "fashionmnist" in one_line(info)
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path / "nope" / "x.npz"), data_root=tmp_path)
    msg = one_line(info)
    assert "no such file or folder" in msg and "image folder" in msg


def test_fit_spec_for_files(npz, tmp_path):
    path = npz[0]
    assert fit_spec_for(str(path)) is None
    train = tmp_path / "toy_train.npz"
    train.write_bytes(path.read_bytes())
    assert fit_spec_for(f"{path}@classes=0-2,n=5") == f"{train}@classes=0-2"
    for split in ("train", "test"):
        _save(tmp_path / "tree" / split / "c" / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert fit_spec_for(str(tmp_path / "tree" / "test")) == str(tmp_path / "tree" / "train")
    assert fit_spec_for("noise:gaussian") is None and fit_spec_for("patches") is None


@pytest.mark.shared
def test_shared_cifar10_test(shared_data):
    ds = load_dataset(str(shared_data / "cifar10_test.npz"))
    assert ds.images.shape == (9966, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.num_classes == 10 and ds.classes[0] == "airplane"
    counts = np.bincount(ds.labels, minlength=10)
    assert counts.sum() == 9966 and counts[8] == 1000 - 33 and counts[7] == 999
    assert fit_spec_for(str(shared_data / "cifar10_test.npz")) == str(shared_data / "cifar10_train.npz")
