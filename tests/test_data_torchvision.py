"""torchvision datasets read from tiny files written in torchvision's own on-disk layouts.

Each test writes known pixels in the format the real files use, loads them by name through
``data_root``, and checks pixels and labels against what was written; where torchvision's own
dataset class can be made to read the fakes (by switching off its md5 check), its output is the
second, independent reference.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from ncprobe.data import fit_spec_for, load_dataset
from ncprobe.errors import DatasetError


def _images(rng, n, h=32, w=32, c=3):
    return rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def write_cifar(root, *, hundred=False, n_train=3, n_test=5, seed=0):
    """CIFAR python batches: dict(data=(N, 3072) uint8 rows [R plane, G plane, B plane], labels)."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    names = (["train"], ["test"]) if hundred else ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
    label_key = "fine_labels" if hundred else "labels"
    k = 100 if hundred else 10
    written = {}
    for split, files, n in (("train", names[0], n_train), ("test", names[1], n_test)):
        xs, ys = [], []
        for f in files:
            x = _images(rng, n)
            y = rng.integers(0, k, size=n).tolist()
            rows = np.empty((n, 3072), dtype=np.uint8)
            for c in range(3):  # documented layout: 1024 values per channel, row-major 32x32
                rows[:, c * 1024:(c + 1) * 1024] = x[:, :, :, c].reshape(n, 1024)
            entry = {"data": rows, label_key: y, "batch_label": f}
            if hundred:
                entry["coarse_labels"] = [v // 5 for v in y]
            with open(folder / f, "wb") as fh:
                pickle.dump(entry, fh, protocol=2)
            xs.append(x)
            ys.extend(y)
        written[split] = (np.concatenate(xs), np.asarray(ys))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else {
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return written


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_layout(tmp_path, monkeypatch, hundred):
    written = write_cifar(tmp_path, hundred=hundred)
    name = "cifar100" if hundred else "cifar10"
    test = load_dataset(name, data_root=tmp_path)
    train = load_dataset(f"{name}:train", data_root=tmp_path)
    for ds, split in ((test, "test"), (train, "train")):
        x, y = written[split]
        np.testing.assert_array_equal(ds.images, x)
        np.testing.assert_array_equal(ds.labels, y)
        assert ds.labels.dtype == np.int64 and ds.images.dtype == np.uint8
    assert len(train) == (3 if hundred else 15)
    assert (test.name, train.name) == (name, f"{name}:train")
    assert test.num_classes == (100 if hundred else 10)
    assert test.classes[0] == ("c0" if hundred else "airplane")

    # torchvision's own reader agrees once its md5 check is switched off
    import torchvision.datasets.cifar as tvc

    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    cls = tvc.CIFAR100 if hundred else tvc.CIFAR10
    for ds, is_train in ((test, False), (train, True)):
        ref = cls(str(tmp_path), train=is_train)
        np.testing.assert_array_equal(ds.images, ref.data)
        np.testing.assert_array_equal(ds.labels, np.asarray(ref.targets))


def test_cifar_pickle_with_code_is_refused(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": Evil(), "labels": []}, fh)
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset("cifar10", data_root=tmp_path)


def test_svhn_mat_layout_and_label_10_is_zero(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    n = 7
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # MATLAB order (H, W, C, N)
    y = np.array([[10], [1], [2], [10], [9], [5], [3]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": y})
    ds = load_dataset("svhn", data_root=tmp_path)
    np.testing.assert_array_equal(ds.labels, [0, 1, 2, 0, 9, 5, 3])
    for i in range(n):
        np.testing.assert_array_equal(ds.images[i], X[:, :, :, i])
    assert ds.num_classes == 10

    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.SVHN, "_check_integrity", lambda self: True)
    ref = tvd.SVHN(str(tmp_path), split="test")
    np.testing.assert_array_equal(ds.images, ref.data.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ds.labels, ref.labels)

    with pytest.raises(DatasetError, match="svhn:train not found"):
        load_dataset("svhn:train", data_root=tmp_path)


def _write_idx(path, arr: np.ndarray):
    """idx format: magic (0, 0, 0x08 = uint8, ndim) then big-endian int32 dims, then the bytes."""
    with open(path, "wb") as fh:
        fh.write(bytes([0, 0, 0x08, arr.ndim]))
        fh.write(struct.pack(">" + "i" * arr.ndim, *arr.shape))
        fh.write(arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST"),
                                          ("kmnist", "KMNIST")])
def test_mnist_family_idx_layout(tmp_path, name, folder):
    rng = np.random.default_rng(2)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        written[prefix] = (x, y)
    ds = load_dataset(name, data_root=tmp_path)
    tr = load_dataset(f"{name}:train", data_root=tmp_path)
    np.testing.assert_array_equal(ds.images[..., 0], written["t10k"][0])
    np.testing.assert_array_equal(ds.labels, written["t10k"][1])
    np.testing.assert_array_equal(tr.images[..., 0], written["train"][0])
    assert ds.images.shape == (4, 28, 28, 1) and ds.num_classes == 10

    import torchvision.datasets as tvd

    ref = getattr(tvd, folder)(str(tmp_path), train=False)
    np.testing.assert_array_equal(ds.images[..., 0], ref.data.numpy())
    np.testing.assert_array_equal(ds.labels, ref.targets.numpy())


def test_stl10_binary_layout(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    base = tmp_path / "stl10_binary"
    base.mkdir()
    x = _images(rng, 3, 96, 96)
    y = np.array([1, 10, 4], dtype=np.uint8)  # 1-based in the files
    # each image stored channel by channel, each channel column-major: (N, C, W, H) in C order
    (base / "test_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 3, 2, 1)).tobytes())
    (base / "test_y.bin").write_bytes(y.tobytes())
    (base / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    ds = load_dataset("stl10", data_root=tmp_path)
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, [0, 9, 3])
    assert ds.classes[9] == "k9"

    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.STL10, "_check_integrity", lambda self: True)
    ref = tvd.STL10(str(tmp_path), split="test")
    np.testing.assert_array_equal(ds.images, ref.data.transpose(0, 2, 3, 1))


def test_dtd_layout_item_source(tmp_path):
    rng = np.random.default_rng(4)
    images = tmp_path / "dtd" / "dtd" / "images"
    labels = tmp_path / "dtd" / "dtd" / "labels"
    labels.mkdir(parents=True)
    lines = []
    for cls in ("bubbly", "banded"):
        (images / cls).mkdir(parents=True)
        for j in range(2):
            arr = rng.integers(0, 256, size=(40 + j, 50, 3), dtype=np.uint8)
            Image.fromarray(arr).save(images / cls / f"{cls}_{j}.jpg")
            lines.append(f"{cls}/{cls}_{j}.jpg")
    (labels / "test1.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset("textures", data_root=tmp_path)  # alias of dtd
    assert ds.images is None and len(ds) == 4
    assert ds.classes == ["banded", "bubbly"]
    np.testing.assert_array_equal(ds.labels, [1, 1, 0, 0])
    ref = np.asarray(Image.open(images / "bubbly" / "bubbly_1.jpg").convert("RGB"))
    np.testing.assert_array_equal(ds.image(1), ref)
    assert ds.image(1).shape == (41, 50, 3)
    sub = load_dataset("dtd@classes=0", data_root=tmp_path)
    np.testing.assert_array_equal(sub.labels, [0, 0])
    np.testing.assert_array_equal(sub.image(0), np.asarray(Image.open(images / "banded" / "banded_0.jpg")))


def test_missing_torchvision_files_one_line_error(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", data_root=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "--data-root" in msg and "--download" in msg


def test_env_var_sets_default_root(tmp_path, monkeypatch):
    written = write_cifar(tmp_path)
    monkeypatch.setenv("NCPROBE_DATA", str(tmp_path))
    ds = load_dataset("CIFAR-10")
    np.testing.assert_array_equal(ds.labels, written["test"][1])


def test_split_errors_and_fit_spec(tmp_path):
    with pytest.raises(DatasetError, match="cifar10:train, cifar10:test"):
        load_dataset("cifar10:val", data_root=tmp_path)
    assert fit_spec_for("cifar10") == "cifar10:train"
    assert fit_spec_for("svhn:test@classes=0-5,n=100") == "svhn:train@classes=0-5"
    assert fit_spec_for("dtd") == "dtd:train"


def test_torchvision_fingerprint_tracks_files_and_options(tmp_path):
    write_cifar(tmp_path)
    a = load_dataset("cifar10", data_root=tmp_path)
    assert load_dataset("cifar10", data_root=tmp_path).fingerprint == a.fingerprint
    assert load_dataset("cifar10:train", data_root=tmp_path).fingerprint != a.fingerprint
    assert load_dataset("cifar10@n=2", data_root=tmp_path).fingerprint != a.fingerprint
    write_cifar(tmp_path / "other", seed=5)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes((tmp_path / "other" / "cifar-10-batches-py" / "test_batch").read_bytes())
    assert load_dataset("cifar10", data_root=tmp_path).fingerprint != a.fingerprint


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils as tvu
    from torchvision.datasets import CIFAR10

    calls = []

    def fake_fetch(url, download_root, extract_root=None, filename=None, md5=None, **kw):
        calls.append((url, filename, md5))
        write_cifar(Path(download_root))

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_fetch)
    ds = load_dataset("cifar10", data_root=tmp_path, download=True)
    assert calls == [(CIFAR10.url, CIFAR10.filename, CIFAR10.tgz_md5)] and len(ds) == 5
    load_dataset("cifar10", data_root=tmp_path, download=True)  # present: no second fetch
    assert len(calls) == 1

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as info:
        load_dataset("stl10", data_root=tmp_path, download=True)
    msg = str(info.value)
    assert "could not download stl10" in msg and "no network" in msg and "\n" not in msg
