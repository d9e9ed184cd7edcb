"""``load_dataset(spec)``: turn a spec string into a :class:`~ncprobe.data.source.DataSource`.

Sources, in the order a spec's SOURCE is matched:

1. a torchvision name (:data:`~ncprobe.data.tvsets.TV_SETS`; case, '-' and '_' ignored; aliases
   fmnist, textures -> dtd), read from ``data_root`` in torchvision's layout;
2. ``digits``, ``noise`` (``noise:gaussian`` / ``noise:uniform``), ``patches``;
3. a path: an ``.npz`` file, an image folder or an image list (a ``.txt`` file of ``path label``
   lines, OpenOOD's ``benchmark_imglist`` format; see :mod:`ncprobe.data.imglist`), relative to the
   working directory or else to ``data_root``. (Write ``./mnist`` for a folder that shares a
   dataset's name.) An image list's paths are relative to its ``@root=DIR`` option (itself
   relative to the working directory or else to ``data_root``), by default to the list's folder.

Options are applied in this order: ``classes`` (keep those class ids; labels are not renumbered,
and ``classes`` names are cut to ``max(kept) + 1`` so that ``num_classes`` covers them), then ``n``
(a uniformly random subset of n samples drawn with ``numpy.random.default_rng(seed)``, kept in
the original order; n >= the set's size keeps all of it). For noise and patches ``n`` is the
number of images generated.

Any ``OSError`` met while finding or reading the files (permission denied, a file that disappears,
an I/O error) is reported as a one-line :class:`~ncprobe.errors.DatasetError` ``PATH: reason; fix``;
so is a path that is not valid UTF-8 (it could not be shown or written in reports), and a load
that would need more memory than ``$NCPROBE_MAX_BYTES`` (see :mod:`ncprobe.data.limits`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DatasetError
from .fingerprint import LOADER_VERSION, digest, file_fingerprint, stat_fingerprint
from .imglist import read_imglist
from .limits import ENV_MAX_BYTES, check_budget, human, max_bytes, os_error, shown
from .local import read_folder, read_npz
from .source import DataSource
from .spec import DatasetSpec, normalize_name, parse_spec
from .synthetic import NOISE_KINDS, make_noise, make_patches, read_digits
from .tvsets import SPLIT_ALIASES, TV_ALIASES, TV_SETS, RawSet

SYNTHETIC = ("digits", "noise", "patches")
KNOWN_NAMES = tuple(TV_SETS) + SYNTHETIC

_COMMON_OPTIONS = ("classes", "n", "seed")
_GENERATED_OPTIONS = ("n", "seed", "size", "channels")
_ACCEPTED = (
    "accepted: a name ({names}), a .npz file, an image folder, a .txt image list, digits, noise:gaussian, "
    "noise:uniform or patches"
)


# ---------------------------------------------------------------- the kinds of source


@dataclass(frozen=True)
class SourceKind:
    """One kind of dataset source and everything ``load_dataset`` does differently for it.

    ``split(spec, key, default_split)`` -> the split to read (or None; raises for a bad one);
    ``read(key, split, options, seed, root, download)`` -> (RawSet, content fingerprint, meta);
    ``display(key, split, default_split)`` -> the short name shown in tables.
    """

    name: str
    options: tuple[str, ...]
    split: Callable[[DatasetSpec, Any, str], str | None]
    read: Callable[..., tuple[RawSet, str, dict]]
    display: Callable[[Any, str | None, str], str]
    by_path: bool = False  # the key is a file or folder path
    generates: bool = False  # the images are made, ``n`` is how many


def _alias(split: str | None) -> str | None:
    return SPLIT_ALIASES.get(split, split) if split is not None else None


def _torchvision_split(spec: DatasetSpec, key, default_split: str) -> str:
    split = _alias(_alias(spec.split) or default_split)
    splits = TV_SETS[key].splits
    if split not in splits:
        raise DatasetError(f"{key} has no split {split!r}; use one of {', '.join(f'{key}:{s}' for s in splits)}")
    return split


def _digits_split(spec: DatasetSpec, key, default_split: str) -> str:
    split = _alias(spec.split) or _alias(default_split)
    if split not in ("train", "test"):
        raise DatasetError(f"digits has no split {split!r}; use digits:train or digits:test")
    return split


def _noise_split(spec: DatasetSpec, key, default_split: str) -> str:
    split = _alias(spec.split) or "gaussian"
    if split not in NOISE_KINDS:
        raise DatasetError(f"unknown noise kind {spec.split!r}; use noise:gaussian or noise:uniform")
    return split


def _no_split(spec: DatasetSpec, key, default_split: str) -> None:
    if spec.split is not None:
        what = "patches" if key == "patches" else f"{spec.source} (a file or folder)"
        raise DatasetError(f"{what} has no splits; remove ':{spec.split}' from the spec")
    return None


def _read_torchvision(key, split, opts, seed, root: Path, download: bool):
    raw = TV_SETS[key].read(root, split, download)
    return raw, digest(str(root.resolve()), key, split, stat_fingerprint(raw.files, root)), {"root": str(root)}


def _read_digits(key, split, opts, seed, root, download):
    import sklearn

    return read_digits(split), digest("digits", split, sklearn.__version__), {}


def _read_noise(key, split, opts, seed, root, download):
    raw = make_noise(split, int(opts.get("n", 1000)), int(opts.get("size", 32)), int(opts.get("channels", 3)), seed)
    return raw, digest("noise", split, len(raw.labels), raw.images.shape, seed), {}


def _read_patches(key, split, opts, seed, root, download):
    import sklearn

    raw = make_patches(int(opts.get("n", 1000)), int(opts.get("size", 32)), int(opts.get("channels", 3)), seed)
    return raw, digest("patches", sklearn.__version__, raw.images.shape, seed), {}


def _read_npz(key, split, opts, seed, root, download):
    raw = read_npz(key, unlabelled=bool(opts.get("unlabelled", False)))
    return raw, digest("npz", file_fingerprint(key)), {"path": str(key)}


def _read_folder(key, split, opts, seed, root, download):
    raw = read_folder(key)
    # "walk:sorted": the order of images in nested class folders is torchvision's (ncprobe.data.local)
    fp = digest("folder", "walk:sorted", stat_fingerprint(raw.files, key), *(raw.classes or []))
    return raw, fp, {"path": str(key)}


def _list_root(opts, data_root: Path) -> Path | None:
    """The ``root=`` option as a folder: as written (``~`` expanded), else under ``data_root``."""
    if "root" not in opts:
        return None
    p = Path(str(opts["root"])).expanduser()
    if p.is_absolute() or p.is_dir() or not (data_root / p).is_dir():
        return p
    return data_root / p


def _read_imglist(key, split, opts, seed, root, download):
    base = _list_root(opts, root)
    raw = read_imglist(key, base)
    where = (base if base is not None else Path(key).parent).resolve()
    fp = digest("imglist", file_fingerprint(key), str(where), stat_fingerprint(raw.files, where))
    return raw, fp, {"path": str(key), "root": str(where)}


def _named_split(key, split, default_split: str) -> str:
    return key if split == _alias(default_split) else f"{key}:{split}"


def _folder_name(key, split, default_split: str) -> str:
    path = Path(key)
    return shown(path.name or str(path))


KINDS: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind("torchvision", _COMMON_OPTIONS, _torchvision_split, _read_torchvision, _named_split),
        SourceKind("digits", _COMMON_OPTIONS, _digits_split, _read_digits, _named_split),
        SourceKind("noise", _GENERATED_OPTIONS, _noise_split, _read_noise, lambda key, split, d: f"noise:{split}",
                   generates=True),
        SourceKind("patches", _GENERATED_OPTIONS, _no_split, _read_patches, lambda key, split, d: "patches",
                   generates=True),
        SourceKind("npz", _COMMON_OPTIONS + ("unlabelled",), _no_split, _read_npz,
                   lambda key, split, d: shown(Path(key).stem), by_path=True),
        SourceKind("folder", _COMMON_OPTIONS, _no_split, _read_folder, _folder_name, by_path=True),
        SourceKind("imglist", _COMMON_OPTIONS + ("root",), _no_split, _read_imglist,
                   lambda key, split, d: shown(Path(key).stem), by_path=True),
    )
}


def default_data_root() -> Path:
    """``$NCPROBE_DATA`` when set, else ``~/.cache/ncprobe/data``."""
    env = os.environ.get("NCPROBE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ncprobe" / "data"


def _root(data_root) -> Path:
    return Path(data_root).expanduser() if data_root else default_data_root()


def _looks_like_path(source: str) -> bool:
    return (any(ch in source for ch in "/\\~") or source.lower().endswith((".npz", ".txt"))
            or source.startswith("."))


def _resolve(spec: DatasetSpec, root: Path) -> tuple[str, str | Path]:
    """(kind, key-or-path) for a parsed spec; raises DatasetError for unknown sources."""
    source = spec.source
    if not _looks_like_path(source):
        key = normalize_name(source)
        key = TV_ALIASES.get(key, key)
        if key in TV_SETS:
            return "torchvision", key
        if key in SYNTHETIC:
            return key, key
    p = Path(source).expanduser()
    candidates = [p] if p.is_absolute() else [p, root / p]
    for c in candidates:
        if c.is_dir():
            return "folder", c
        if c.is_file():
            if c.suffix.lower() == ".txt":
                return "imglist", c
            if c.suffix.lower() != ".npz":
                raise DatasetError(
                    f"cannot load {c}: ncprobe reads .npz files (x, y arrays), image folders and .txt image "
                    "lists ('path label' lines); convert it with numpy.savez(x=..., y=...)"
                )
            return "npz", c
    names = ", ".join(KNOWN_NAMES)
    if _looks_like_path(source):
        where = str(p) if p.is_absolute() else f"{Path.cwd()} or {root}"
        raise DatasetError(f"no such file or folder: {source} (looked in {where}); {_ACCEPTED.format(names=names)}")
    pool = list(KNOWN_NAMES) + list(TV_ALIASES)
    close = difflib.get_close_matches(normalize_name(source), pool, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise DatasetError(f"unknown dataset {source!r}; {hint}{_ACCEPTED.format(names=names)}")


def _check_options(spec: DatasetSpec, kind: SourceKind, label: str) -> None:
    allowed = kind.options
    for key in spec.options:
        if key not in allowed:
            raise DatasetError(f"option {key!r} does not apply to {label}; options for it: {', '.join(allowed)}")


def _apply_classes(raw: RawSet, keep: tuple[int, ...], label: str):
    labels = raw.labels
    if len(labels) == 0 or (labels < 0).any():
        raise DatasetError(f"classes= needs labels, but {label} is unlabelled; drop the classes option")
    total = len(raw.classes) if raw.classes is not None else int(labels.max()) + 1
    bad = [c for c in keep if c >= total]
    if bad:
        raise DatasetError(f"classes= asks for class {bad[0]} but {label} has {total} classes (0-{total - 1})")
    idx = np.flatnonzero(np.isin(labels, np.asarray(keep, dtype=np.int64)))
    if len(idx) == 0:
        raise DatasetError(f"{label} has no samples of the classes asked for; check the classes= option")
    classes = raw.classes[: max(keep) + 1] if raw.classes is not None else None
    return idx, classes


def _take(raw: RawSet, idx: np.ndarray, label: str = "the set") -> RawSet:
    if raw.images is not None:
        per_item = int(np.prod(raw.images.shape[1:], dtype=np.int64)) * raw.images.itemsize
        check_budget(len(idx) * per_item, f"the {len(idx):,} images selected from {label}",
                     "select fewer (n=...) or fewer classes")
    return RawSet(
        labels=raw.labels[idx],
        files=raw.files,
        images=None if raw.images is None else np.ascontiguousarray(raw.images[idx]),
        loader=None if raw.loader is None else raw.loader.take(idx),
        classes=raw.classes,
    )


def load_dataset(spec: str, *, data_root: str | Path | None = None, download: bool = False,
                 default_split: str = "test") -> DataSource:
    """Load the images and labels a spec names (see :mod:`ncprobe.data.spec` for the grammar).

    ``data_root`` (default ``$NCPROBE_DATA`` or ``~/.cache/ncprobe/data``) holds torchvision
    datasets and is also searched for relative file paths; ``download`` lets torchvision fetch
    missing files; ``default_split`` applies when the spec names no split. Any problem raises
    :class:`~ncprobe.errors.DatasetError` with a one-line message.
    """
    parsed = parse_spec(spec, known_names=KNOWN_NAMES + tuple(TV_ALIASES))
    root = _root(data_root)
    try:
        return _load(parsed, root, download, default_split)
    except OSError as e:
        raise os_error(e, parsed.source) from None
    except MemoryError:
        raise DatasetError(
            f"ran out of memory loading {shown(parsed.source)} (less is free than the {human(max_bytes())} budget "
            f"{ENV_MAX_BYTES} allows); use a smaller set (n=...) or free memory"
        ) from None


def _check_text(path: Path) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(f"the path {shown(path)} is not valid UTF-8, so it cannot be shown or written in "
                           "reports; rename it (e.g. convmv -f latin1 -t utf8 --notest)") from None


def _load(parsed: DatasetSpec, root: Path, download: bool, default_split: str) -> DataSource:
    kind_name, key = _resolve(parsed, root)
    kind = KINDS[kind_name]
    if kind.by_path:
        _check_text(Path(key))
    split = kind.split(parsed, key, default_split)
    label = shown(key) if kind.by_path else (key if split is None else f"{key}:{split}")
    _check_options(parsed, kind, label)
    opts = parsed.options
    seed = int(opts.get("seed", 0))
    raw, base_fp, extra = kind.read(key, split, opts, seed, root, download)
    meta: dict = {"kind": kind.name, "split": split, **extra}

    if "classes" in opts:
        idx, classes = _apply_classes(raw, opts["classes"], label)
        raw = _take(raw, idx, label)
        raw.classes = classes
        meta["class_subset"] = list(opts["classes"])
    if "n" in opts and not kind.generates:
        total = len(raw.labels)
        meta["n_available"] = total
        if opts["n"] < total:
            idx = np.sort(np.random.default_rng(seed).choice(total, size=opts["n"], replace=False))
            raw = _take(raw, idx, label)

    canonical = parsed.with_(source=str(key) if kind.by_path else key, split=split)
    name = parsed.name
    if not name:
        opts_text = parsed.options_string(keys=[k for k in parsed.options if k != "root"])
        base = kind.display(key, split, default_split)
        name = f"{base}@{opts_text}" if opts_text else base
    return DataSource(
        name=name,
        spec=canonical.to_string(),
        labels=np.ascontiguousarray(raw.labels, dtype=np.int64),
        fingerprint=digest(LOADER_VERSION, kind.name, base_fp, split, canonical.options_string()),
        images=raw.images,
        classes=raw.classes,
        load_item=raw.loader,
        meta=meta,
    )


def _sibling(path: Path, kind: str) -> Path | None:
    """The training counterpart of a test/val file or folder, when it exists next to it."""
    if kind in ("npz", "imglist"):
        stem = path.stem
        for word in ("test", "val"):
            i = stem.rfind(word)
            if i >= 0:
                cand = path.with_name(stem[:i] + "train" + stem[i + len(word):] + path.suffix)
                if cand.is_file():
                    return cand
        return None
    if path.name.lower() in ("test", "val", "validation", "valid"):
        cand = path.parent / "train"
        return cand if cand.is_dir() else None
    return None


def fit_spec_for(spec: str, *, data_root: str | Path | None = None) -> str | None:
    """The spec of the training split of the same set, keeping its ``classes`` option.

    ``cifar10`` -> ``cifar10:train``; ``digits@classes=0-5`` -> ``digits:train@classes=0-5``;
    ``data/x_test.npz`` -> ``data/x_train.npz`` when that file exists (likewise ``val`` and a
    ``test``/``val`` folder with a sibling ``train``); None for noise, patches and files or
    folders with no such counterpart. Unknown sources raise DatasetError as in load_dataset.
    """
    parsed = parse_spec(spec, known_names=KNOWN_NAMES + tuple(TV_ALIASES))
    try:
        return _fit_spec_for(parsed, data_root)
    except OSError as e:
        raise os_error(e, parsed.source) from None


def _fit_spec_for(parsed: DatasetSpec, data_root) -> str | None:
    kind_name, key = _resolve(parsed, _root(data_root))
    keep = {k: v for k, v in parsed.options.items() if k in ("classes", "root")}
    if kind_name in ("torchvision", "digits"):
        if kind_name == "torchvision" and "train" not in TV_SETS[key].splits:
            return None
        return DatasetSpec(text="", source=key, split="train", options=keep).to_string()
    if KINDS[kind_name].by_path:
        sib = _sibling(Path(key), kind_name)
        if sib is None:
            return None
        src = parsed.source
        rel = Path(src).expanduser()
        # keep the user's way of writing the path when the file sits where they pointed
        out = str(rel.with_name(sib.name)) if (rel.parent / sib.name).exists() else str(sib)
        return DatasetSpec(text="", source=out, options=keep).to_string()
    return None
