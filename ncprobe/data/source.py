"""The dataset object every loader returns: raw uint8 images plus labels, before preprocessing.

Preprocessing (grey -> RGB, resize to the model's input, normalize with the checkpoint's mean/std)
happens batch-wise on the compute device, in :mod:`ncprobe.data.transforms`, so that sources stay
simple and a feature cache can key on (source fingerprint, preprocessing) separately.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class DataSource(Dataset):
    """A labelled (or unlabelled, label -1) set of images.

    ``images`` is an in-memory uint8 array (N, H, W, C) with C in {1, 3} when the whole set fits in
    memory (npz, torchvision's CIFAR/MNIST/SVHN files, digits, noise); otherwise ``None`` and
    ``load_item(i)`` returns one HWC uint8 array (image folders). ``labels`` is int64 (N,), -1 where
    unknown. ``fingerprint`` identifies the content (file hash or size+mtime, split, options) and
    changes whenever the images would.
    """

    name: str
    spec: str
    labels: np.ndarray
    fingerprint: str
    images: np.ndarray | None = None
    classes: list[str] | None = None
    load_item: object | None = None  # callable(i) -> HWC uint8, used when images is None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels >= 0).all())

    @property
    def num_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        if not self.labelled:
            return None
        return int(self.labels.max()) + 1

    def image(self, i: int) -> np.ndarray:
        if self.images is not None:
            return self.images[i]
        return self.load_item(int(i))  # type: ignore[misc]

    def __getitem__(self, i: int):
        img = self.image(i)
        if img.ndim == 2:
            img = img[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), int(self.labels[i])

    def subset(self, indices, suffix: str) -> "DataSource":
        """A view on some of the samples; its name and fingerprint record which."""
        idx = np.asarray(indices, dtype=np.int64)
        digest = hashlib.sha256(idx.tobytes()).hexdigest()[:16]
        return DataSource(
            name=f"{self.name}{suffix}",
            spec=f"{self.spec}{suffix}",
            labels=self.labels[idx],
            fingerprint=f"{self.fingerprint}|subset:{digest}",
            images=None if self.images is None else self.images[idx],
            classes=self.classes,
            load_item=None if self.images is not None else _SubsetItems(self, idx),
            meta=dict(self.meta),
        )


class _SubsetItems:
    """``load_item`` of a subset of an item source (a class, not a closure, so it pickles)."""

    def __init__(self, parent: DataSource, indices: np.ndarray):
        self.parent = parent
        self.indices = indices

    def __call__(self, i: int) -> np.ndarray:
        return self.parent.image(int(self.indices[int(i)]))
