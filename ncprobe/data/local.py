"""Local sources: an ``.npz`` file of arrays, or a folder of image files.

``.npz``: images under ``x`` (also accepted: ``images``, ``X``, ``data``) and integer labels under
``y`` (also ``labels``, ``Y``, ``targets``); an optional 1-D string array ``classes`` names them.
Image layouts: (N, H, W, C) with C in {1, 3}, (N, H, W) grey, or (N, C, H, W) when the last axis
is not 1/3 but the second is. Pixel rule for non-uint8 arrays: floats whose values all lie in
[0, 1] are scaled by 255; other floats and integers must lie in [0, 255]; both are rounded to the
nearest integer. Anything else is refused. An ``.npz`` without labels loads only when asked for
with ``@unlabelled=1`` (labels -1), so a forgotten ``y`` never passes silently.

Folder: class sub-folders (sorted by name, hidden ones skipped, empty ones kept so that ids stay
aligned between a train and a test folder) give the labels; a flat folder of images is unlabelled.
Images are read with PIL and converted to RGB on access.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .items import IMAGE_EXTENSIONS, ImageFileLoader, is_image_file
from .tvsets import RawSet

X_KEYS = ("x", "images", "X", "data")
Y_KEYS = ("y", "labels", "Y", "targets")


def to_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    """Apply the documented layout and pixel rules; returns a contiguous (N, H, W, C) uint8 array."""
    if x.ndim == 3:
        x = x[:, :, :, None]
    elif x.ndim == 4:
        if x.shape[3] not in (1, 3) and x.shape[1] in (1, 3):
            x = x.transpose(0, 2, 3, 1)
        if x.shape[3] not in (1, 3):
            raise DatasetError(
                f"{where}: images of shape {x.shape} have {x.shape[3]} channels; store (N, H, W, 3) "
                "RGB or (N, H, W) grey"
            )
    else:
        raise DatasetError(f"{where}: images have shape {x.shape}; store (N, H, W, C) or (N, H, W)")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: images have dtype {x.dtype}; store uint8 (or floats in [0, 1])")
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.uint8)
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DatasetError(f"{where}: images contain NaN or inf; store finite values in [0, 1] or [0, 255]")
    if x.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        x = x * 255.0
    elif lo < 0.0 or hi > 255.0:
        raise DatasetError(
            f"{where}: pixel values span [{lo:g}, {hi:g}]; store uint8, or floats in [0, 1] or [0, 255]"
        )
    return np.ascontiguousarray(np.rint(x).astype(np.uint8))


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"{where}: labels have shape {y.shape} but there are {n} images; store y as (N,) integers")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
            raise DatasetError(f"{where}: labels are not whole numbers; store y as (N,) integers")
    elif y.dtype.kind not in "iub":
        raise DatasetError(f"{where}: labels have dtype {y.dtype}; store y as (N,) integers")
    y = y.astype(np.int64)
    if len(y) and y.min() < -1:
        raise DatasetError(f"{where}: labels must be class ids >= 0 (or -1 for unknown), found {y.min()}")
    return y


def read_npz(path: Path, *, unlabelled: bool = False) -> RawSet:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"cannot read {path} as an .npz file ({e}); save it with numpy.savez") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path} holds a single array, not an .npz archive; save x and y with numpy.savez")
    with z:
        keys = list(z.files)
        xkey = next((k for k in X_KEYS if k in keys), None)
        if xkey is None:
            raise DatasetError(
                f"{path} has no 'x' array of images (keys found: {', '.join(keys) or 'none'}); save images as "
                "x (N, H, W, C uint8)"
            )
        ykey = next((k for k in Y_KEYS if k in keys), None)
        if ykey is None and not unlabelled:
            raise DatasetError(
                f"{path} has no 'y' array of labels (keys found: {', '.join(keys)}); add y (N,) integer labels, "
                f"or load it as unlabelled with '{path}@unlabelled=1'"
            )
        try:
            x = to_uint8_images(z[xkey], f"{path} [{xkey}]")
            classes = None
            if ykey is not None and not unlabelled:
                y = _labels(z[ykey], len(x), f"{path} [{ykey}]")
                if "classes" in keys:
                    names = z["classes"]
                    if names.ndim == 1 and names.dtype.kind in "US" and len(names) > (y.max() if len(y) else -1):
                        classes = [str(c) for c in names]
            else:
                y = np.full(len(x), -1, dtype=np.int64)
        except ValueError as e:  # e.g. an object array refused by allow_pickle=False
            raise DatasetError(f"cannot read {path}: {e}; store plain numeric arrays") from None
    if len(x) == 0:
        raise DatasetError(f"{path} holds no images; give a file with at least one")
    return RawSet(labels=y, files=[path], images=x, classes=classes)


def _images_under(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(f))
    return out


def read_folder(folder: Path) -> RawSet:
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DatasetError(f"cannot read folder {folder}; check its permissions")
    entries = sorted(os.listdir(folder))
    top = [folder / e for e in entries if is_image_file(e) and (folder / e).is_file()]
    subdirs = [folder / e for e in entries if not e.startswith(".") and (folder / e).is_dir()]
    per_class = [_images_under(d) for d in subdirs]
    if any(per_class):
        if top:
            raise DatasetError(
                f"{folder} mixes images ({top[0].name}, ...) with class sub-folders; move the loose images "
                "into a sub-folder, or point at a folder of one kind"
            )
        paths = [p for files in per_class for p in files]
        labels = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(per_class)])
        classes = [d.name for d in subdirs]
    elif top:
        paths, labels, classes = top, np.full(len(top), -1, dtype=np.int64), None
    else:
        raise DatasetError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder} or its sub-folders; point at a folder "
            "of images or of class sub-folders"
        )
    return RawSet(labels=labels, files=paths, loader=ImageFileLoader(paths), classes=classes)
