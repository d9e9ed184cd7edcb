"""Per-item image access for sources too large (or too irregular) to hold as one array.

Both helpers are plain picklable objects, so DataLoader workers can use them under any start
method.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .limits import MAX_IMAGE_PIXELS, shown

#: what PIL raises for a file it cannot decode (its plugins are not consistent about it)
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, zlib.error, IndexError, KeyError,
                  TypeError, ZeroDivisionError, MemoryError, Image.DecompressionBombError)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class ImageFileLoader:
    """``loader(i)`` -> the i-th image file as an RGB uint8 HWC array (PIL, any mode -> RGB).

    The image's size is read from its header first: over :data:`~ncprobe.data.limits.MAX_IMAGE_PIXELS`
    pixels it is refused before anything is decoded. Every failure is a one-line DatasetError that
    names the file.
    """

    def __init__(self, paths):
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, i: int) -> np.ndarray:
        path = self.paths[int(i)]
        try:
            with warnings.catch_warnings():
                # ncprobe refuses these itself, below, in one line; Pillow's warning would only add noise
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    w, h = im.size
                    if w * h > MAX_IMAGE_PIXELS:
                        raise _too_large(path, w, h)
                    return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Image.DecompressionBombError as e:  # past twice Pillow's limit: open() refuses before we can ask
            found = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(found.group(1)) / 1e6:.0f} Mpx" if found else "too large"
            raise DatasetError(
                f"image {shown(path)} is {size}, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx ncprobe decodes (a "
                "decompression bomb, or a huge scan); shrink it or remove it from the folder"
            ) from None
        except _DECODE_ERRORS as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise DatasetError(f"cannot read image {shown(path)}: {reason}; remove or replace the file") from None

    def take(self, indices) -> ImageFileLoader:
        return ImageFileLoader([self.paths[int(i)] for i in indices])


def _too_large(path: str, w: int, h: int) -> DatasetError:
    return DatasetError(
        f"image {shown(path)} is {w}x{h} pixels ({w * h / 1e6:.0f} Mpx), more than the {MAX_IMAGE_PIXELS / 1e6:.0f} "
        "Mpx ncprobe decodes (a decompression bomb, or a huge scan); shrink it or remove it from the folder"
    )


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
