"""digits (scikit-learn's 8x8 set), noise and photo patches: no files, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ncprobe.data import fit_spec_for, load_dataset
from ncprobe.errors import DatasetError


def test_digits_split_sizes_stratified_and_pixels():
    d = load_digits()
    train = load_dataset("digits:train")
    test = load_dataset("digits")  # default split: test
    assert (train.name, test.name) == ("digits:train", "digits")
    assert len(train) + len(test) == len(d.target) == 1797
    assert len(test) == int(np.ceil(0.3 * 1797))
    assert train.images.shape[1:] == (8, 8, 1) and train.images.dtype == np.uint8
    # stratified: per-class share in each split within one sample of the overall share
    total = np.bincount(d.target, minlength=10)
    np.testing.assert_allclose(np.bincount(test.labels, minlength=10), 0.3 * total, atol=1)
    # every image appears exactly once across the splits, with pixels round(v * 255 / 16)
    expected = sorted(np.rint(img * 255 / 16).astype(np.uint8).tobytes() + bytes([t])
                      for img, t in zip(d.images, d.target, strict=True))
    got = sorted(img[..., 0].tobytes() + bytes([t])
                 for ds in (train, test) for img, t in zip(ds.images, ds.labels, strict=True))
    assert got == expected
    assert load_dataset("digits", default_split="train").fingerprint == train.fingerprint
    assert load_dataset("digits:train").fingerprint == train.fingerprint != test.fingerprint


def test_digits_classes_option_and_fit_spec():
    ds = load_dataset("digits:train@classes=0-5")
    assert set(ds.labels) == set(range(6)) and ds.num_classes == 6
    assert ds.name == "digits:train@classes=0-5"
    assert fit_spec_for("digits@classes=0-5") == "digits:train@classes=0-5"
    with pytest.raises(DatasetError, match="digits:train or digits:test"):
        load_dataset("digits:extra")


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_deterministic_by_seed(kind):
    a = load_dataset(f"noise:{kind}@n=50,size=16,seed=1")
    b = load_dataset(f"noise:{kind}@n=50,size=16,seed=1")
    c = load_dataset(f"noise:{kind}@n=50,size=16,seed=2")
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images) and a.fingerprint != c.fingerprint
    assert a.images.shape == (50, 16, 16, 3) and not a.labelled
    x = a.images.astype(np.float64)
    if kind == "gaussian":  # N(127.5, 63.75^2), clipped
        assert abs(x.mean() - 127.5) < 3 and abs(x.std() - 63.75) < 4
    else:  # uniform on 0..255: mean 127.5, sd 255/sqrt(12) ~ 73.9
        assert abs(x.mean() - 127.5) < 3 and abs(x.std() - 73.9) < 3
    assert load_dataset(f"noise:{kind}@n=5,channels=1").images.shape == (5, 32, 32, 1)


def test_noise_defaults_and_errors():
    ds = load_dataset("noise")
    assert ds.name == "noise:gaussian" and ds.images.shape == (1000, 32, 32, 3)
    with pytest.raises(DatasetError, match="noise:gaussian or noise:uniform"):
        load_dataset("noise:pink")
    with pytest.raises(DatasetError, match="does not apply"):
        load_dataset("noise@classes=0")


def test_patches_deterministic_and_from_the_photos():
    from sklearn.datasets import load_sample_images

    a = load_dataset("patches@n=20,size=24,seed=0")
    b = load_dataset("patches@n=20,size=24,seed=0")
    c = load_dataset("patches@n=20,size=24,seed=1")
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (20, 24, 24, 3) and not a.labelled and a.name == "patches@n=20,seed=0,size=24"
    # colours come from the two photographs: patch means lie within the photos' pixel range and
    # patches are not flat noise (neighbouring pixels are strongly correlated, as in photos)
    photos = load_sample_images().images
    lo = min(p.min() for p in photos)
    hi = max(p.max() for p in photos)
    assert a.images.min() >= lo and a.images.max() <= hi
    x = a.images.astype(np.float64)
    r = np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1]
    assert r > 0.8
    with pytest.raises(DatasetError, match="no splits"):
        load_dataset("patches:test")
