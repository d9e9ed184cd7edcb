"""Batched random crop + flip against a per-sample numpy reference."""

from __future__ import annotations

import numpy as np
import torch

from ncprobe.finetune.augment import crop_padding, random_crop_flip


def test_crop_padding_scales_with_side():
    assert [crop_padding(s) for s in (32, 16, 8, 64, 2)] == [4, 2, 1, 8, 1]


def test_random_crop_flip_matches_reference():
    b, c, h, w, pad = 6, 3, 5, 7, 2
    x = torch.randn(b, c, h, w)
    fill = torch.tensor([-1.0, 0.5, 2.0])
    out = random_crop_flip(x, pad=pad, flip=True, generator=torch.Generator().manual_seed(3), fill=fill).numpy()
    # replay the same random numbers
    g = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g).numpy()
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g).numpy()
    fl = (torch.rand(b, generator=g) < 0.5).numpy()
    xn = x.numpy()
    for i in range(b):
        padded = np.empty((c, h + 2 * pad, w + 2 * pad), dtype=np.float32)
        padded[:] = fill.numpy()[:, None, None]
        padded[:, pad:pad + h, pad:pad + w] = xn[i]
        ref = padded[:, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        if fl[i]:
            ref = ref[:, :, ::-1]
        np.testing.assert_array_equal(out[i], ref)


def test_no_flip_no_pad_is_identity():
    x = torch.randn(3, 3, 4, 4)
    out = random_crop_flip(x, pad=0, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
