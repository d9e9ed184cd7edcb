"""A torchvision ImageFolder tree loads as ncprobe's image-folder source with torchvision's classes,
labels and order (checked against torchvision.datasets.ImageFolder itself), and the documented
differences are what they say."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from ncprobe.data import load_dataset

# every extension torchvision's IMG_EXTENSIONS accepts, in upper and lower case
EXTENSIONS = (".jpg", ".JPEG", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".PNG")


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _tree(root, rng):
    """Classes whose names sort differently by case and digits, and nested folders whose names sort
    differently as paths than depth first ('sub', 'sub-b', 'sub b', 'sub/deeper')."""
    layout = {
        "B": ["x.png", "a.JPEG"],
        "a": ["z.jpg", "sub/1.png", "sub/deeper/2.bmp", "sub-b/3.ppm", "sub b/4.tif", "sub.c/5.webp", "Sub/6.pgm"],
        "10": ["m.tiff", "n.PNG", "k/l.png"],
        "2": ["only.jpeg"],
    }
    for cls, files in layout.items():
        for i, rel in enumerate(files):
            grey = rel.endswith(".pgm")
            shape = (5 + i, 7) if grey else (5 + i, 7, 3)
            _save(root / cls / rel, rng.integers(0, 256, size=shape, dtype=np.uint8))
    for i, ext in enumerate(EXTENSIONS):
        _save(root / "exts" / f"img{i}{ext}", rng.integers(0, 256, size=(4, 4) if ext == ".pgm" else (4, 4, 3),
                                                         dtype=np.uint8))
    (root / "a" / "notes.txt").write_text("not an image")


def test_imagefolder_tree_matches_torchvision(tmp_path):
    root = tmp_path / "tree"
    _tree(root, np.random.default_rng(0))
    tv = ImageFolder(str(root))
    ds = load_dataset(str(root))
    assert ds.classes == tv.classes
    assert ds.load_item.paths == [p for p, _ in tv.samples]
    np.testing.assert_array_equal(ds.labels, tv.targets)
    for i in (0, 5, len(tv) - 1):  # torchvision's own decode: PIL, converted to RGB
        np.testing.assert_array_equal(ds.image(i), np.asarray(tv[i][0]))


def test_documented_differences_from_torchvision(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "tree"
    for cls in ("cat", "dog"):
        _save(root / cls / "0.png", rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))
    (root / "empty").mkdir()
    # torchvision refuses an empty class folder; with allow_empty=True it agrees with ncprobe
    with pytest.raises(FileNotFoundError):
        ImageFolder(str(root))
    tv = ImageFolder(str(root), allow_empty=True)
    ds = load_dataset(str(root))
    assert ds.classes == tv.classes == ["cat", "dog", "empty"]
    np.testing.assert_array_equal(ds.labels, tv.targets)

    # a hidden folder is a class for torchvision, skipped by ncprobe; hidden images likewise
    _save(root / ".ipynb_checkpoints" / "h.png", np.zeros((4, 4, 3), np.uint8))
    _save(root / "cat" / ".hidden.png", np.zeros((4, 4, 3), np.uint8))
    tv = ImageFolder(str(root), allow_empty=True)
    ds = load_dataset(str(root))
    assert tv.classes[0] == ".ipynb_checkpoints" and ".ipynb_checkpoints" not in ds.classes
    assert [p for p, _ in tv.samples if "/." not in p] == ds.load_item.paths

    # .gif: read by ncprobe, not an ImageFolder extension
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "dog" / "1.gif")
    tv = ImageFolder(str(root), allow_empty=True)
    ds = load_dataset(str(root))
    assert str(root / "dog" / "1.gif") in ds.load_item.paths
    assert all(not p.endswith(".gif") for p, _ in tv.samples)
