"""Standard small-image augmentation as batched tensor ops on the compute device.

Random crop with zero padding (4 pixels at 32x32, scaled with the image side) and a random
horizontal flip, as in He et al. 2016 for CIFAR. Applied to the *normalized* batch; the padding
value is the normalized black pixel ``-mean/std``, so the result equals padding the raw image with
black and normalizing afterwards. Random numbers come from a CPU ``torch.Generator`` so runs are
reproducible whatever the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_padding(side: int) -> int:
    """4 pixels at 32x32, scaled with the image side (2 at 16, 1 at 8), at least 1."""
    return max(1, int(round(4 * side / 32)))


def random_crop_flip(x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator,
                     fill: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample random crop of ``x`` (B,C,H,W) padded by ``pad`` (value ``fill`` per channel), and a
    horizontal flip with probability 1/2 when ``flip``."""
    b, c, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), value=0.0)
        if fill is not None:
            border = torch.ones(1, 1, h + 2 * pad, w + 2 * pad, dtype=torch.bool, device=x.device)
            border[..., pad:pad + h, pad:pad + w] = False
            xp = torch.where(border, fill.to(xp).view(1, c, 1, 1), xp)
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        m = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x
