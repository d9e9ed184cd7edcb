"""Sources that need no download: scikit-learn's digits, noise images, and photo patches.

- ``digits``: the 1,797 8x8 handwritten digits bundled with scikit-learn. Pixel values 0..16 become
  uint8 by ``round(v * 255 / 16)``, one channel. ``digits:train`` / ``digits:test`` are a fixed
  stratified 70/30 split (``train_test_split(..., test_size=0.3, stratify=y, random_state=0)``),
  each kept in the original order.
- ``noise:gaussian``: pixels ``round(N(127.5, 63.75^2))`` clipped to [0, 255] (i.e. N(0.5, 0.25^2)
  in [0, 1] units); ``noise:uniform``: pixels uniform on {0, ..., 255}. Unlabelled.
- ``patches``: crops of scikit-learn's two bundled photographs (china.jpg, flower.jpg): a random
  square side in [size, 4*size] (capped by the photo), random position, random horizontal flip,
  then resized to size x size with PIL's bilinear filter. Natural-image statistics with no object
  classes, a cheap far-OOD set. Unlabelled.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .tvsets import RawSet

NOISE_KINDS = ("gaussian", "uniform")


def read_digits(split: str) -> RawSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise DatasetError(f"digits has no split {split!r}; use digits:train or digits:test")
    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    labels = d.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=0
    )
    idx = np.sort(idx_train if split == "train" else idx_test)
    return RawSet(
        labels=labels[idx], files=[], images=np.ascontiguousarray(images[idx]),
        classes=[str(i) for i in range(10)],
    )


def make_noise(kind: str, n: int, size: int, channels: int, seed: int) -> RawSet:
    rng = np.random.default_rng(seed)
    shape = (n, size, size, channels)
    if kind == "gaussian":
        x = np.clip(np.rint(rng.normal(127.5, 63.75, size=shape)), 0, 255).astype(np.uint8)
    elif kind == "uniform":
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        raise DatasetError(f"unknown noise kind {kind!r}; use noise:gaussian or noise:uniform")
    return RawSet(labels=np.full(n, -1, dtype=np.int64), files=[], images=x)


def make_patches(n: int, size: int, channels: int, seed: int) -> RawSet:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        cap = min(h, w)
        side = int(rng.integers(min(size, cap), min(4 * size, cap) + 1))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        img = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR)
        if channels == 1:
            img = img.convert("L")
        arr = np.asarray(img, dtype=np.uint8)
        out[i] = arr[:, :, None] if arr.ndim == 2 else arr
    return RawSet(labels=np.full(n, -1, dtype=np.int64), files=[], images=out)
