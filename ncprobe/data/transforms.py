"""Batch preprocessing on the compute device: uint8 NCHW -> normalized float32 NCHW, 3 channels.

Steps: scale to [0, 1] (``/ 255``); resize to the model's input size with bilinear interpolation
(``align_corners=False``, ``antialias=True``, which filters when shrinking and equals plain
bilinear when enlarging) only when H x W differ; repeat a grey channel to RGB; subtract ``mean``
and divide by ``std`` per channel. Resizing is done before the grey -> RGB repeat, which gives the
same numbers (both are per-channel) at a third of the cost.

Images decoded one by one from files (image folders, image lists) are instead brought to the model's
input on the CPU, with PIL, by the model's own evaluation transform (:class:`Preprocessing`, applied
by :func:`apply_preprocessing` while the batches are read): resize, then centre crop, exactly as
timm's ``create_transform(**resolve_data_config({}, model=m))`` and torchvision's
``weights.transforms()`` do. Their batches reach :class:`Preprocess` at the input size already.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .items import resize_item

#: PIL filters by the names timm and torchvision use for them
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
CROP_MODES = ("center", "squash", "border")
#: bumped whenever :func:`apply_preprocessing` changes the pixels it makes (part of the cache key)
PREPROCESSING_VERSION = 1


def _as_size(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 3:  # (C, H, W) as stored in LoadedCheckpoint.input_size
        size = size[1:]
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {size}")
    return size  # type: ignore[return-value]


def _as_stats(values, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.repeat(3)
    if t.numel() != 3:
        raise ValueError(f"{what} needs 1 or 3 values, got {t.numel()}")
    return t.view(1, 3, 1, 1)


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation transform of images decoded from files: resize, then centre crop to ``crop``.

    ``crop``: (H, W), the model's input. ``resize``: the (H, W) box the image is resized to first;
    how depends on ``crop_mode``, as in timm's ``transforms_imagenet_eval``:

    * ``center``, square box: the shorter side to ``resize[0]``, the longer one
      ``int(resize[0] * long / short)`` (torchvision's ``Resize(int)``); a non-square box: the
      aspect ratio kept, both sides ``round(side / min ratio)`` (timm's ``ResizeKeepRatio``);
    * ``squash``: both sides to the box (aspect ratio not kept);
    * ``border``: the longer side to fit the box, the rest padded with ``fill``.

    Then the centre ``crop`` (``int(round((side - crop) / 2))`` from the top/left; padded with
    ``fill``, 0 unless ``border``, where the image is smaller). ``resize=None`` is ncprobe's own default
    for models whose configuration says nothing: the shorter side scaled to fit the crop (bilinear),
    then the centre crop (:func:`ncprobe.data.items.resize_item`). ``crop_pct`` is timm's ratio of
    crop to resize; ``config`` says where the numbers came from (not part of equality).
    """

    crop: tuple[int, int]
    resize: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    crop_pct: float | None = None
    crop_mode: str = "center"
    fill: tuple[int, ...] = (0, 0, 0)
    config: str = field(default="", compare=False)

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use one of {', '.join(INTERPOLATIONS)}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {self.crop_mode!r}; use one of {', '.join(CROP_MODES)}")
        object.__setattr__(self, "crop", _as_size(self.crop))
        if self.resize is not None:
            object.__setattr__(self, "resize", _as_size(self.resize))
        object.__setattr__(self, "fill", tuple(int(v) for v in self.fill))

    @classmethod
    def from_crop_pct(cls, crop, crop_pct: float, *, interpolation: str = "bilinear", crop_mode: str = "center",
                      fill=(0, 0, 0), config: str = "") -> Preprocessing:
        """timm's rule: the resize box is ``floor(side / crop_pct)`` of each crop side."""
        h, w = _as_size(crop)
        return cls(crop=(h, w), resize=(math.floor(h / crop_pct), math.floor(w / crop_pct)),
                   interpolation=interpolation, crop_pct=float(crop_pct), crop_mode=crop_mode, fill=fill,
                   config=config)

    def at(self, crop) -> Preprocessing:
        """The same transform for another input size: the resize box follows ``crop_pct`` (timm's
        rule), or the crop itself for ncprobe's default."""
        crop = _as_size(crop)
        if crop == self.crop:
            return self
        if self.resize is None:
            return replace(self, crop=crop)
        pct = self.crop_pct or self.crop[0] / self.resize[0]
        return Preprocessing.from_crop_pct(crop, pct, interpolation=self.interpolation, crop_mode=self.crop_mode,
                                           fill=self.fill, config=self.config)

    def key(self) -> dict:
        """What the pixels depend on (for the feature-cache key)."""
        return {"crop": list(self.crop), "resize": None if self.resize is None else list(self.resize),
                "interpolation": self.interpolation, "crop_mode": self.crop_mode, "fill": list(self.fill),
                "version": PREPROCESSING_VERSION}

    def describe(self) -> dict:
        """A JSON-able summary: the numbers plus words for ``ncprobe inspect``."""
        h, w = self.crop
        if self.resize is None:
            resize = "shorter side scaled to fit the crop"
        elif self.crop_mode == "squash":
            resize = f"both sides to {self.resize[0]} x {self.resize[1]} (squash)"
        elif self.crop_mode == "border":
            resize = f"longer side to fit {self.resize[0]} x {self.resize[1]}, padded"
        elif self.resize[0] == self.resize[1]:
            resize = f"shorter side to {self.resize[0]}"
        else:
            resize = f"to cover {self.resize[0]} x {self.resize[1]}, aspect ratio kept"
        pct = f", crop_pct {self.crop_pct:g}" if self.crop_pct else ""
        return {**self.key(), "crop_pct": self.crop_pct, "config": self.config,
                "text": {"resize": resize, "crop": f"centre {h} x {w}{pct}"}}


def apply_preprocessing(img: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """An HWC uint8 image through ``prep`` (see :class:`Preprocessing`) -> (crop H, crop W, C) uint8."""
    if prep.resize is None:
        return resize_item(img, prep.crop)
    h, w = img.shape[:2]
    nh, nw = _resized_shape(h, w, prep)
    grey = img.ndim == 2 or img.shape[2] == 1
    if (nh, nw) != (h, w):
        pil = Image.fromarray(img.reshape(h, w) if grey else img)
        img = np.asarray(pil.resize((nw, nh), INTERPOLATIONS[prep.interpolation]), dtype=np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    return _centre_crop_or_pad(img, prep.crop, prep.fill)


def _resized_shape(h: int, w: int, prep: Preprocessing) -> tuple[int, int]:
    """(H, W) after the resize step, with timm's and torchvision's arithmetic."""
    rh, rw = prep.resize
    if prep.crop_mode == "squash":
        return rh, rw
    if prep.crop_mode == "border" or rh != rw:
        ratio_h, ratio_w = h / rh, w / rw
        ratio = max(ratio_h, ratio_w) if prep.crop_mode == "border" else min(ratio_h, ratio_w)
        return round(h / ratio), round(w / ratio)
    short, long = min(h, w), max(h, w)
    if short == rh:
        return h, w
    new_long = int(rh * long / short)
    return (rh, new_long) if h <= w else (new_long, rh)


def _centre_crop_or_pad(img: np.ndarray, crop: tuple[int, int], fill) -> np.ndarray:
    """torchvision's CenterCrop (and timm's CenterCropOrPad): pad to the crop where smaller, then
    take the crop at ``int(round((side - crop) / 2))``."""
    ch, cw = crop
    h, w, c = img.shape
    if ch > h or cw > w:
        ph, pw = max(ch, h), max(cw, w)
        colour = np.resize(np.asarray(fill, dtype=np.uint8), c)
        out = np.empty((ph, pw, c), dtype=np.uint8)
        out[:] = colour
        top, left = (ph - h) // 2, (pw - w) // 2
        out[top:top + h, left:left + w] = img
        img, h, w = out, ph, pw
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return np.ascontiguousarray(img[top:top + ch, left:left + cw])


class Preprocess(nn.Module):
    """uint8 (N, C, H, W) batch, C in {1, 3} -> float32 (N, 3, *size), normalized.

    Float input is taken as already scaled to [0, 1]. Works on any device: the mean/std buffers
    follow ``.to(device)`` and are moved to the batch's device if the module was not.

    ``items``: the :class:`Preprocessing` of images decoded from files (default: ncprobe's own, at
    ``size``), which :func:`ncprobe.data.batches.batch_loader` applies when given this module.
    ``variant`` is set by that loader when one batch carries the images of several transforms side
    by side (3 channels each): this module then takes its own three channels.
    """

    def __init__(self, mean, std, size, items: Preprocessing | None = None):
        super().__init__()
        self.size = _as_size(size)
        self.items = Preprocessing(crop=self.size) if items is None else items.at(self.size)
        self.variant: int | None = None
        self.register_buffer("mean", _as_stats(mean, "mean"), persistent=False)
        self.register_buffer("std", _as_stats(std, "std"), persistent=False)
        if bool((self.std <= 0).any()):
            raise ValueError("std values must be positive")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant is not None and x.ndim == 4:
            x = x[:, 3 * self.variant:3 * self.variant + 3]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected an (N, C, H, W) batch with C 1 or 3, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        elif x.is_floating_point():
            x = x.to(torch.float32)
        else:
            raise TypeError(f"expected a uint8 (or float in [0, 1]) batch, got {x.dtype}")
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = self.mean.to(x.device)
        std = self.std.to(x.device)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"size={self.size}, mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
