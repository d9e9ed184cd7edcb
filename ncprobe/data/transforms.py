"""Batch preprocessing on the compute device: uint8 NCHW -> normalized float32 NCHW, 3 channels.

Steps: scale to [0, 1] (``/ 255``); resize to the model's input size with bilinear interpolation
(``align_corners=False``, ``antialias=True``, which filters when shrinking and equals plain
bilinear when enlarging) only when H x W differ; repeat a grey channel to RGB; subtract ``mean``
and divide by ``std`` per channel. Resizing is done before the grey -> RGB repeat, which gives the
same numbers (both are per-channel) at a third of the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class Preprocess(nn.Module):
    """uint8 (N, C, H, W) batch, C in {1, 3} -> float32 (N, 3, *size), normalized.

    Float input is taken as already scaled to [0, 1]. Works on any device: the mean/std buffers
    follow ``.to(device)`` and are moved to the batch's device if the module was not.
    """

    def __init__(self, mean, std, size):
        super().__init__()
        self.size = _as_size(size)
        self.register_buffer("mean", _as_stats(mean, "mean"), persistent=False)
        self.register_buffer("std", _as_stats(std, "std"), persistent=False)
        if bool((self.std <= 0).any()):
            raise ValueError("std values must be positive")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
