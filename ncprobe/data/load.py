"""``load_dataset(spec)``: turn a spec string into a :class:`~ncprobe.data.source.DataSource`.

Sources, in the order a spec's SOURCE is matched:

1. a torchvision name (:data:`~ncprobe.data.tvsets.TV_SETS`; case, '-' and '_' ignored; aliases
   fmnist, textures -> dtd), read from ``data_root`` in torchvision's layout;
2. ``digits``, ``noise`` (``noise:gaussian`` / ``noise:uniform``), ``patches``;
3. a path: an ``.npz`` file or an image folder, relative to the working directory or else to
   ``data_root``. (Write ``./mnist`` for a folder that shares a dataset's name.)

Options are applied in this order: ``classes`` (keep those class ids; labels are not renumbered,
and ``classes`` names are cut to ``max(kept) + 1`` so that ``num_classes`` covers them), then ``n``
(a uniformly random subset of n samples drawn with ``numpy.random.default_rng(seed)``, kept in
the original order; n >= the set's size keeps all of it). For noise and patches ``n`` is the
number of images generated.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .fingerprint import LOADER_VERSION, digest, file_fingerprint, stat_fingerprint
from .local import read_folder, read_npz
from .source import DataSource
from .spec import DatasetSpec, normalize_name, parse_spec
from .synthetic import NOISE_KINDS, make_noise, make_patches, read_digits
from .tvsets import SPLIT_ALIASES, TV_ALIASES, TV_SETS, RawSet

SYNTHETIC = ("digits", "noise", "patches")
KNOWN_NAMES = tuple(TV_SETS) + SYNTHETIC

_COMMON_OPTIONS = ("classes", "n", "seed")
_OPTIONS_BY_KIND = {
    "torchvision": _COMMON_OPTIONS,
    "digits": _COMMON_OPTIONS,
    "folder": _COMMON_OPTIONS,
    "npz": _COMMON_OPTIONS + ("unlabelled",),
    "noise": ("n", "seed", "size", "channels"),
    "patches": ("n", "seed", "size", "channels"),
}
_ACCEPTED = (
    "accepted: a name ({names}), a .npz file, an image folder, digits, noise:gaussian, noise:uniform "
    "or patches"
)


def default_data_root() -> Path:
    """``$NCPROBE_DATA`` when set, else ``~/.cache/ncprobe/data``."""
    env = os.environ.get("NCPROBE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ncprobe" / "data"


def _root(data_root) -> Path:
    return Path(data_root).expanduser() if data_root else default_data_root()


def _looks_like_path(source: str) -> bool:
    return any(ch in source for ch in "/\\~") or source.lower().endswith(".npz") or source.startswith(".")


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
            if c.suffix.lower() != ".npz":
                raise DatasetError(
                    f"cannot load {c}: ncprobe reads .npz files (x, y arrays) and image folders; "
                    "convert it with numpy.savez(x=..., y=...)"
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


def _split_for(spec: DatasetSpec, kind: str, key, default_split: str) -> str | None:
    split = spec.split
    if split is not None:
        split = SPLIT_ALIASES.get(split, split)
    if kind == "torchvision":
        split = split or default_split
        split = SPLIT_ALIASES.get(split, split)
        splits = TV_SETS[key].splits
        if split not in splits:
            raise DatasetError(f"{key} has no split {split!r}; use one of {', '.join(f'{key}:{s}' for s in splits)}")
        return split
    if kind == "digits":
        split = split or SPLIT_ALIASES.get(default_split, default_split)
        if split not in ("train", "test"):
            raise DatasetError(f"digits has no split {split!r}; use digits:train or digits:test")
        return split
    if kind == "noise":
        split = split or "gaussian"
        if split not in NOISE_KINDS:
            raise DatasetError(f"unknown noise kind {spec.split!r}; use noise:gaussian or noise:uniform")
        return split
    if split is not None:
        what = "patches" if kind == "patches" else f"{spec.source} (a file or folder)"
        raise DatasetError(f"{what} has no splits; remove ':{spec.split}' from the spec")
    return None


def _check_options(spec: DatasetSpec, kind: str, label: str) -> None:
    allowed = _OPTIONS_BY_KIND[kind]
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


def _take(raw: RawSet, idx: np.ndarray) -> RawSet:
    return RawSet(
        labels=raw.labels[idx],
        files=raw.files,
        images=None if raw.images is None else np.ascontiguousarray(raw.images[idx]),
        loader=None if raw.loader is None else raw.loader.take(idx),
        classes=raw.classes,
    )


def _display_name(spec: DatasetSpec, kind: str, key, split, default_split: str) -> str:
    if spec.name:
        return spec.name
    if kind in ("torchvision", "digits"):
        base = key if split == SPLIT_ALIASES.get(default_split, default_split) else f"{key}:{split}"
    elif kind == "noise":
        base = f"noise:{split}"
    elif kind == "patches":
        base = "patches"
    else:
        path = Path(key)
        base = path.stem if kind == "npz" else (path.name or str(path))
    opts = spec.options_string()
    return f"{base}@{opts}" if opts else base


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
    kind, key = _resolve(parsed, root)
    split = _split_for(parsed, kind, key, default_split)
    label = str(key) if kind in ("npz", "folder") else (key if split is None else f"{key}:{split}")
    _check_options(parsed, kind, label)
    opts = parsed.options
    seed = int(opts.get("seed", 0))
    meta: dict = {"kind": kind, "split": split}

    if kind == "torchvision":
        raw = TV_SETS[key].read(root, split, download)
        base_fp = digest(str(root.resolve()), key, split, stat_fingerprint(raw.files, root))
        meta["root"] = str(root)
    elif kind == "digits":
        import sklearn

        raw = read_digits(split)
        base_fp = digest("digits", split, sklearn.__version__)
    elif kind == "noise":
        raw = make_noise(split, int(opts.get("n", 1000)), int(opts.get("size", 32)),
                         int(opts.get("channels", 3)), seed)
        base_fp = digest("noise", split, len(raw.labels), raw.images.shape, seed)
    elif kind == "patches":
        import sklearn

        raw = make_patches(int(opts.get("n", 1000)), int(opts.get("size", 32)), int(opts.get("channels", 3)), seed)
        base_fp = digest("patches", sklearn.__version__, raw.images.shape, seed)
    elif kind == "npz":
        raw = read_npz(key, unlabelled=bool(opts.get("unlabelled", False)))
        base_fp = digest("npz", file_fingerprint(key))
        meta["path"] = str(key)
    else:
        raw = read_folder(key)
        base_fp = digest("folder", stat_fingerprint(raw.files, key), *(raw.classes or []))
        meta["path"] = str(key)

    if "classes" in opts:
        idx, classes = _apply_classes(raw, opts["classes"], label)
        raw = _take(raw, idx)
        raw.classes = classes
        meta["class_subset"] = list(opts["classes"])
    if "n" in opts and kind not in ("noise", "patches"):
        total = len(raw.labels)
        meta["n_available"] = total
        if opts["n"] < total:
            idx = np.sort(np.random.default_rng(seed).choice(total, size=opts["n"], replace=False))
            raw = _take(raw, idx)

    canonical = parsed.with_(source=str(key) if kind in ("npz", "folder") else key, split=split)
    return DataSource(
        name=_display_name(parsed, kind, key, split, default_split),
        spec=canonical.to_string(),
        labels=np.ascontiguousarray(raw.labels, dtype=np.int64),
        fingerprint=digest(LOADER_VERSION, kind, base_fp, split, canonical.options_string()),
        images=raw.images,
        classes=raw.classes,
        load_item=raw.loader,
        meta=meta,
    )


def _sibling(path: Path, kind: str) -> Path | None:
    """The training counterpart of a test/val file or folder, when it exists next to it."""
    if kind == "npz":
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
    kind, key = _resolve(parsed, _root(data_root))
    keep = {k: v for k, v in parsed.options.items() if k == "classes"}
    if kind in ("torchvision", "digits"):
        if kind == "torchvision" and "train" not in TV_SETS[key].splits:
            return None
        return DatasetSpec(text="", source=key, split="train", options=keep).to_string()
    if kind in ("npz", "folder"):
        sib = _sibling(Path(key), kind)
        if sib is None:
            return None
        src = parsed.source
        rel = Path(src).expanduser()
        # keep the user's way of writing the path when the file sits where they pointed
        out = str(rel.with_name(sib.name)) if (rel.parent / sib.name).exists() else str(sib)
        return DatasetSpec(text="", source=out, options=keep).to_string()
    return None
