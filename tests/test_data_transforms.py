"""Preprocess: uint8 NCHW -> /255 -> resize (bilinear, antialias) -> grey->RGB -> normalize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ncprobe.data.transforms import Preprocess

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _pil_resize(channel: np.ndarray, size) -> np.ndarray:
    """Independent reference: PIL's float ('F') bilinear resize, which filters when shrinking."""
    img = Image.fromarray(channel.astype(np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float64)


def test_same_size_is_scale_and_normalize():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, 3, 8, 8), dtype=np.uint8)
    out = Preprocess(MEAN, STD, (8, 8))(torch.from_numpy(x))
    assert out.dtype == torch.float32 and out.shape == (4, 3, 8, 8)
    ref = (x / 255.0 - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)


def test_grey_becomes_three_equal_channels():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).reshape(2, 1, 5, 5)
    out = Preprocess(0.5, 0.25, 5)(x).numpy()
    assert out.shape == (2, 3, 5, 5)
    ref = (x.numpy()[:, 0] / 255.0 - 0.5) / 0.25
    for c in range(3):
        np.testing.assert_allclose(out[:, c], ref, atol=1e-6)


@pytest.mark.parametrize("src, dst", [((28, 28), (32, 32)), ((96, 96), (32, 32)), ((40, 24), (32, 32)),
                                      ((8, 8), (32, 32))])
def test_resize_matches_pil_bilinear(src, dst):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(2, 3) + src, dtype=np.uint8)
    out = Preprocess(MEAN, STD, dst)(torch.from_numpy(x)).numpy()
    assert out.shape == (2, 3) + dst
    for n in range(2):
        for c in range(3):
            ref = (_pil_resize(x[n, c] / 255.0, dst) - MEAN[c]) / STD[c]
            np.testing.assert_allclose(out[n, c], ref, atol=2e-5)


def test_grey_resize_equals_resize_of_rgb_copy():
    rng = np.random.default_rng(2)
    g = torch.from_numpy(rng.integers(0, 256, size=(3, 1, 28, 28), dtype=np.uint8))
    pre = Preprocess(MEAN, STD, (32, 32))
    np.testing.assert_allclose(pre(g).numpy(), pre(g.repeat(1, 3, 1, 1)).numpy(), atol=1e-6)


def test_input_size_as_chw_and_bad_input():
    pre = Preprocess(MEAN, STD, (3, 16, 16))
    assert pre.size == (16, 16)
    with pytest.raises(ValueError):
        pre(torch.zeros(2, 4, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError):
        pre(torch.zeros(2, 3, 16, 16, dtype=torch.int32))
    # float input is taken as already in [0, 1]
    u = torch.rand(1, 3, 16, 16)
    np.testing.assert_allclose(pre(u).numpy(), ((u - torch.tensor(MEAN).view(1, 3, 1, 1))
                                                / torch.tensor(STD).view(1, 3, 1, 1)).numpy(), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8)
    pre = Preprocess(MEAN, STD, (32, 32))
    cpu = pre(x)
    gpu = pre(x.cuda())  # module left on CPU: buffers follow the batch
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-5)
