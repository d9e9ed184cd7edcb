"""Per-item image access for sources too large (or too irregular) to hold as one array.

Both helpers are plain picklable objects, so DataLoader workers can use them under any start
method.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class ImageFileLoader:
    """``loader(i)`` -> the i-th image file as an RGB uint8 HWC array (PIL, any mode -> RGB)."""

    def __init__(self, paths):
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, i: int) -> np.ndarray:
        path = self.paths[int(i)]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read image {path}: {e}; remove or replace the file") from None

    def take(self, indices) -> ImageFileLoader:
        return ImageFileLoader([self.paths[int(i)] for i in indices])


def resize_item(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HWC uint8 image to ``size`` = (H, W) without distorting it.

    The shorter side is scaled to fit (PIL bilinear, which filters when shrinking), then the centre
    is cropped to (H, W) -- the usual evaluation transform (Resize + CenterCrop). Images already
    at ``size`` are returned unchanged.
    """
    th, tw = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    if (h, w) == (th, tw):
        return img
    grey = img.ndim == 2 or img.shape[2] == 1
    pil = Image.fromarray(img.reshape(h, w) if grey else img)
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    pil = pil.resize((nw, nh), Image.BILINEAR)
    top, left = (nh - th) // 2, (nw - tw) // 2
    out = np.asarray(pil.crop((left, top, left + tw, top + th)), dtype=np.uint8)
    return out[:, :, None] if grey else out
