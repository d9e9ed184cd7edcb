"""torchvision datasets, read from torchvision's own on-disk layouts under a data root.

Layouts (``ROOT`` = ``--data-root``, default ``$NCPROBE_DATA`` or ``~/.cache/ncprobe/data``)::

    cifar10       ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100      ROOT/cifar-100-python/{train, test, meta}           (fine labels)
    svhn          ROOT/{train,test,extra}_32x32.mat                   (label 10 -> digit 0)
    mnist         ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    fashionmnist  ROOT/FashionMNIST/raw/...  (same names as MNIST)
    kmnist        ROOT/KMNIST/raw/...        (same names as MNIST)
    stl10         ROOT/stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin
    dtd           ROOT/dtd/dtd/{images/CLASS/*.jpg, labels/{train,val,test}1.txt}  (partition 1)

torchvision's dataset classes verify md5 sums of the CIFAR, SVHN and STL-10 files on every load
(and refuse anything else), so those formats are read here directly from their documented layout;
the MNIST family is read with torchvision's own idx readers and DTD through torchvision's class.
With ``download=True`` the missing files are fetched by torchvision (URLs and md5 sums are
torchvision's) and then read the same way.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DatasetError
from .items import ImageFileLoader

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


@dataclass
class RawSet:
    """What a reader returns: in-memory images (NHWC uint8) or an item loader, plus labels."""

    labels: np.ndarray
    files: list[Path]
    images: np.ndarray | None = None
    loader: ImageFileLoader | None = None
    classes: list[str] | None = None


@dataclass(frozen=True)
class TVSet:
    name: str
    splits: tuple[str, ...]
    folder: Callable[[Path], Path]  # where its files live under the root (for messages)
    read: Callable[[Path, str, bool], RawSet]
    title: str = ""


# --- helpers -----------------------------------------------------------------------------------


def _require(name: str, split: str, files: list[Path], folder: Path) -> None:
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DatasetError(
            f"{name}:{split} not found: no {missing[0].name} in {folder}; pass --data-root DIR "
            f"(the folder holding {folder.name}) or --download to fetch it"
        )


def _download(name: str, root: Path, fetch: Callable[[], object]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch()
    except Exception as e:  # network, md5 mismatch, disk: all reported as one line
        msg = " ".join(str(e).split())[:200]
        raise DatasetError(
            f"could not download {name} into {root} ({type(e).__name__}: {msg}); check the network, "
            "or place the files there yourself and pass --data-root"
        ) from None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python batches: dicts, lists, strings and numpy arrays only."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as e:
        raise DatasetError(f"cannot read {path} as a CIFAR python batch ({e}); re-download it with --download") from None
    if not isinstance(entry, dict):
        raise DatasetError(f"{path} is not a CIFAR python batch (no dict inside); re-download it with --download")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


# --- CIFAR ---------------------------------------------------------------------------------------


def _cifar_reader(name: str, tv_class: str, folder: str, files: dict, label_key: str, meta_file: str, meta_key: str):
    def read(root: Path, split: str, download: bool) -> RawSet:
        base = root / folder
        paths = [base / f for f in files[split]]
        if download and not all(p.is_file() for p in paths):
            from torchvision import datasets
            from torchvision.datasets.utils import download_and_extract_archive

            cls = getattr(datasets, tv_class)
            _download(name, root, lambda: download_and_extract_archive(
                cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5))
        _require(name, split, paths, base)
        datas, labels = [], []
        for p in paths:
            entry = _unpickle(p)
            if "data" not in entry or label_key not in entry:
                raise DatasetError(f"{p} lacks 'data' or '{label_key}'; it is not a {name} batch — re-download with --download")
            data = np.asarray(entry["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072 or len(entry[label_key]) != len(data):
                raise DatasetError(f"{p} holds data of shape {data.shape}, expected (N, 3072); re-download with --download")
            datas.append(data)
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
        # each row: 1024 red, 1024 green, 1024 blue values, row-major 32x32 -> NCHW -> NHWC
        images = np.ascontiguousarray(np.concatenate(datas).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        classes = None
        meta_path = base / meta_file
        if meta_path.is_file():
            meta = _unpickle(meta_path)
            if meta_key in meta:
                classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[meta_key]]
        if classes is None and name == "cifar10":
            classes = list(CIFAR10_CLASSES)
        return RawSet(labels=np.concatenate(labels), files=paths + [meta_path], images=images, classes=classes)

    return read


# --- MNIST family -----------------------------------------------------------------------------


def _mnist_reader(name: str, tv_class: str):
    def read(root: Path, split: str, download: bool) -> RawSet:
        from torchvision import datasets
        from torchvision.datasets.mnist import read_image_file, read_label_file

        cls = getattr(datasets, tv_class)
        raw = root / tv_class / "raw"
        prefix = "train" if split == "train" else "t10k"
        paths = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
        if download and not all(p.is_file() for p in paths):
            _download(name, root, lambda: cls(str(root), train=split == "train", download=True))
        _require(name, split, paths, raw)
        try:
            images = read_image_file(str(paths[0])).numpy()
            labels = read_label_file(str(paths[1])).numpy().astype(np.int64)
        except (TypeError, ValueError, KeyError, RuntimeError) as e:
            raise DatasetError(f"cannot read {raw} as {name} idx files ({e}); re-download with --download") from None
        if len(images) != len(labels):
            raise DatasetError(f"{name}:{split} has {len(images)} images but {len(labels)} labels in {raw}; re-download with --download")
        return RawSet(labels=labels, files=paths, images=images[:, :, :, None], classes=list(cls.classes))

    return read


# --- SVHN --------------------------------------------------------------------------------------


def _read_svhn(root: Path, split: str, download: bool) -> RawSet:
    path = root / f"{split}_32x32.mat"
    if download and not path.is_file():
        from torchvision.datasets import SVHN
        from torchvision.datasets.utils import download_url

        url, filename, md5 = SVHN.split_list[split]
        _download("svhn", root, lambda: download_url(url, str(root), filename, md5))
    _require("svhn", split, [path], root)
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        x, y = mat["X"], mat["y"]
    except Exception as e:
        raise DatasetError(f"cannot read {path} as an SVHN .mat file ({e}); re-download with --download") from None
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != y.size:
        raise DatasetError(f"{path}: X has shape {x.shape}, expected (32, 32, 3, N) with N labels; re-download with --download")
    # X is (H, W, C, N) as MATLAB stores it; the digit 0 is labelled 10 in the files
    images = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(3, 0, 1, 2))
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    labels[labels == 10] = 0
    return RawSet(labels=labels, files=[path], images=images, classes=[str(i) for i in range(10)])


# --- STL-10 ------------------------------------------------------------------------------------


def _read_stl10(root: Path, split: str, download: bool) -> RawSet:
    base = root / "stl10_binary"
    xfile = base / ("unlabeled_X.bin" if split == "unlabeled" else f"{split}_X.bin")
    yfile = None if split == "unlabeled" else base / f"{split}_y.bin"
    paths = [xfile] + ([yfile] if yfile else [])
    if download and not all(p.is_file() for p in paths):
        from torchvision.datasets import STL10
        from torchvision.datasets.utils import download_and_extract_archive

        _download("stl10", root, lambda: download_and_extract_archive(
            STL10.url, str(root), filename=STL10.filename, md5=STL10.tgz_md5))
    _require("stl10", split, paths, base)
    size = xfile.stat().st_size
    if size % (3 * 96 * 96):
        raise DatasetError(f"{xfile} has {size} bytes, not a multiple of 3*96*96; re-download with --download")
    # each image: 3 channels, each 96x96 stored column-major -> (N, C, W, H) -> NHWC
    raw = np.memmap(xfile, dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    images = raw if split == "unlabeled" else np.ascontiguousarray(raw)
    if yfile is None:
        labels = np.full(len(images), -1, dtype=np.int64)
    else:
        labels = np.fromfile(yfile, dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images):
            raise DatasetError(f"stl10:{split} has {len(images)} images but {len(labels)} labels; re-download with --download")
    names = base / "class_names.txt"
    try:
        classes = names.read_text(encoding="utf-8").split() if names.is_file() else None
    except UnicodeDecodeError:
        raise DatasetError(f"{names} is not UTF-8 text; re-download stl10 with --download") from None
    return RawSet(labels=labels, files=paths + [names], images=images, classes=classes)


# --- DTD ---------------------------------------------------------------------------------------


def _read_dtd(root: Path, split: str, download: bool) -> RawSet:
    from torchvision.datasets import DTD

    folder = root / "dtd" / "dtd"
    label_file = folder / "labels" / f"{split}1.txt"
    if download and not label_file.is_file():
        _download("dtd", root, lambda: DTD(str(root), split=split, download=True))
    _require("dtd", split, [label_file], folder / "labels")
    try:
        ds = DTD(str(root), split=split, partition=1)
        paths, labels, classes = list(ds._image_files), list(ds._labels), list(ds.classes)
    except (OSError, ValueError, RuntimeError) as e:
        raise DatasetError(f"cannot read DTD under {folder} ({e}); re-download with --download") from None
    return RawSet(labels=np.asarray(labels, dtype=np.int64), files=[label_file, *paths],
                  loader=ImageFileLoader(paths), classes=classes)


# --- registry ----------------------------------------------------------------------------------

_TT = ("train", "test")

TV_SETS: dict[str, TVSet] = {
    "cifar10": TVSet("cifar10", _TT, lambda r: r / "cifar-10-batches-py", _cifar_reader(
        "cifar10", "CIFAR10", "cifar-10-batches-py",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "labels", "batches.meta", "label_names"), "CIFAR-10"),
    "cifar100": TVSet("cifar100", _TT, lambda r: r / "cifar-100-python", _cifar_reader(
        "cifar100", "CIFAR100", "cifar-100-python", {"train": ["train"], "test": ["test"]},
        "fine_labels", "meta", "fine_label_names"), "CIFAR-100 (fine labels)"),
    "svhn": TVSet("svhn", ("train", "test", "extra"), lambda r: r, _read_svhn, "SVHN cropped digits"),
    "mnist": TVSet("mnist", _TT, lambda r: r / "MNIST" / "raw", _mnist_reader("mnist", "MNIST"), "MNIST"),
    "fashionmnist": TVSet("fashionmnist", _TT, lambda r: r / "FashionMNIST" / "raw",
                          _mnist_reader("fashionmnist", "FashionMNIST"), "Fashion-MNIST"),
    "kmnist": TVSet("kmnist", _TT, lambda r: r / "KMNIST" / "raw", _mnist_reader("kmnist", "KMNIST"), "Kuzushiji-MNIST"),
    "stl10": TVSet("stl10", ("train", "test", "unlabeled"), lambda r: r / "stl10_binary", _read_stl10, "STL-10 (96x96)"),
    "dtd": TVSet("dtd", ("train", "val", "test"), lambda r: r / "dtd" / "dtd", _read_dtd, "Describable Textures"),
}

#: other spellings accepted for the names above (after lower-casing and dropping '-' / '_')
TV_ALIASES = {"fmnist": "fashionmnist", "textures": "dtd", "stl": "stl10"}
SPLIT_ALIASES = {"unlabelled": "unlabeled", "validation": "val", "testing": "test", "training": "train"}
