"""Batches of raw uint8 images from a DataSource.

In-memory sources (``source.images`` is an array) are batched by slicing the array: no per-item
Python work, no worker processes. Item sources (image folders, image lists, DTD) go through a torch DataLoader
whose dataset resizes each image to ``size`` with PIL (shorter side to fit, then centre crop; see
:func:`ncprobe.data.items.resize_item`) so that images of different sizes stack; ``workers > 0``
reads them in parallel (worker processes, not kept between passes; ``pin_memory`` pins the batches
when CUDA is present, so the copy to the GPU overlaps the next batch's decoding). ``size`` is
ignored for in-memory sources: their batches keep the stored size and
:class:`ncprobe.data.transforms.Preprocess` resizes them on the device.

``preprocess``: the :class:`~ncprobe.data.transforms.Preprocess` modules of the models the batches
are for. Item sources then apply each one's own evaluation transform
(:class:`~ncprobe.data.transforms.Preprocessing`: the model's resize, interpolation and centre crop)
instead of the default resize to ``size``. When the models need different transforms (all with one
crop size), each batch holds every version side by side, 3 channels each, and each module is told
which channels are its own (``Preprocess.variant``).

Shuffling is reproducible: pass k over the loader (k = 0, 1, ...) visits the samples in the order
``numpy.random.default_rng([seed, k]).permutation(N)``, so every pass reshuffles, as a DataLoader
does, and the same seed gives the same sequence of orders.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DatasetError
from .items import resize_item
from .transforms import apply_preprocessing


def _size_tuple(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    return size[-2:]  # accepts (H, W) or (C, H, W)


class _Failure:
    """A user error met inside a worker, carried to the main process to be raised there as one line
    (a DataLoader would otherwise wrap it with the worker's traceback)."""

    def __init__(self, message: str):
        self.message = message


class _ItemDataset(Dataset):
    def __init__(self, source, size, transforms=None):
        self.source = source
        self.size = size
        self.transforms = transforms  # Preprocessing per variant, or None for the default resize to size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        try:
            img = np.asarray(self.source.image(int(i)), dtype=np.uint8)
        except DatasetError as e:
            return _Failure(str(e)), -1
        if img.ndim == 2:
            img = img[:, :, None]
        if self.transforms:
            img = _variants(img, self.transforms)
        elif self.size is not None:
            img = resize_item(img, self.size)
        return img, int(self.source.labels[int(i)])


def _variants(img: np.ndarray, transforms) -> np.ndarray:
    """The image through each transform; several are stacked along the channels, 3 each."""
    outs = [apply_preprocessing(img, t) for t in transforms]
    if len(outs) == 1:
        return outs[0]
    return np.concatenate([np.repeat(o, 3, axis=2) if o.shape[2] == 1 else o for o in outs], axis=2)


def _assign_variants(source, preprocess) -> list | None:
    """The distinct item transforms of the ``preprocess`` modules (None for in-memory sources), each
    module told which of them is its own when there are several."""
    preprocess = list(preprocess or [])
    if source.images is not None or not preprocess:
        for module in preprocess:
            module.variant = None
        return None
    variants = list(dict.fromkeys(module.items for module in preprocess))
    if len({v.crop for v in variants}) > 1:
        raise ValueError("one batch_loader serves models of one input size; group the models by input size")
    for module in preprocess:
        module.variant = variants.index(module.items) if len(variants) > 1 else None
    return variants


def _collate(batch):
    imgs = [b[0] for b in batch]
    for im in imgs:
        if isinstance(im, _Failure):
            return im
    if len({im.shape[:2] for im in imgs}) > 1:
        return _Failure(
            "images in this dataset have different sizes; pass a size to batch_loader (the model's input "
            "size) so they can be resized to one"
        )
    if len({im.shape[2] for im in imgs}) > 1:
        imgs = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in imgs]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(imgs).transpose(0, 3, 1, 2)))
    y = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    return x, y


class BatchLoader:
    """Iterable of ``(uint8 NCHW tensor, int64 labels)``; ``len()`` is the number of batches."""

    def __init__(self, source, batch_size: int, *, size=None, shuffle: bool = False, seed: int = 0,
                 workers: int = 0, pin_memory: bool = False, drop_last: bool = False, preprocess=None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(workers) < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self.source = source
        self.transforms = _assign_variants(source, preprocess)
        self.batch_size = int(batch_size)
        self.size = _size_tuple(size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.workers = int(workers)
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> np.ndarray | None:
        if not self.shuffle:
            return None
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.source))
        self.epoch += 1
        return order

    def __iter__(self):
        order = self._order()
        if self.source.images is not None:
            return self._iter_array(order)
        return self._iter_items(order)

    def _iter_array(self, order):
        images, labels = self.source.images, self.source.labels
        n, bs = len(labels), self.batch_size
        stop = (n // bs) * bs if self.drop_last else n
        for start in range(0, stop, bs):
            if order is None:
                xb, yb = images[start:start + bs], labels[start:start + bs]
            else:
                idx = order[start:start + bs]
                xb, yb = images[idx], labels[idx]
            if xb.ndim == 3:
                xb = xb[:, :, :, None]
            x = torch.from_numpy(np.asarray(np.ascontiguousarray(xb.transpose(0, 3, 1, 2))))
            y = torch.from_numpy(np.asarray(yb, dtype=np.int64).copy())
            if self.pin_memory:
                x, y = x.pin_memory(), y.pin_memory()
            yield x, y

    def _iter_items(self, order):
        loader = DataLoader(
            _ItemDataset(self.source, self.size, self.transforms),
            batch_size=self.batch_size,
            sampler=None if order is None else order.tolist(),
            shuffle=False,
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last,
            persistent_workers=False,
        )
        for batch in loader:
            if isinstance(batch, _Failure):
                raise DatasetError(batch.message)
            yield batch


def batch_loader(source, batch_size: int, *, size=None, shuffle: bool = False, seed: int = 0,
                 workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
                 preprocess=None) -> BatchLoader:
    """Batches ``(uint8 (B, C, H, W) tensor, int64 (B,) labels)`` over ``source`` (see module doc)."""
    return BatchLoader(source, batch_size, size=size, shuffle=shuffle, seed=seed, workers=workers,
                       pin_memory=pin_memory, drop_last=drop_last, preprocess=preprocess)
