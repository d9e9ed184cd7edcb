"""On-disk cache of extracted features, keyed by everything that determines them.

The key hashes the checkpoint's sha256 (or a hash of its weights when it has no file), the
dataset's content fingerprint, the preprocessing (input size, mean, std), the probe points and the
reduction. A changed checkpoint, dataset or transform therefore never reuses stale features. Files
are written to a temporary name and renamed into place, so a crash leaves no half-written entry; an
entry that fails to read back whole (truncated, bad zip CRC, missing arrays) is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .featureset import FeatureSet

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("NCPROBE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/ncprobe/features").expanduser()


def cache_key(checkpoint_id: str, dataset_fingerprint: str, preprocess: dict, layers: list[str], reduction: str) -> str:
    payload = {
        "format": FORMAT_VERSION,
        "checkpoint": checkpoint_id,
        "dataset": dataset_fingerprint,
        "preprocess": preprocess,
        "layers": list(layers),
        "reduction": reduction,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.npz"


def load(cache_dir: Path, key: str, name: str) -> FeatureSet | None:
    """The cached features for ``key``, or None when absent or damaged (a damaged file is removed)."""
    path = _path(cache_dir, key)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["__info__"]))
            layers = info["layers"]
            feats = {layer: np.asarray(z[f"f{i}"]) for i, layer in enumerate(layers)}
            labels = np.asarray(z["__labels__"])
        n = len(labels)
        if info.get("key") != key or any(v.shape[0] != n for v in feats.values()):
            raise ValueError("inconsistent entry")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        warnings.warn(f"feature cache entry {path} is damaged ({type(exc).__name__}); rebuilding it", stacklevel=2)
        try:
            path.unlink()
        except OSError:
            pass
        return None
    return FeatureSet(name=name, layers=layers, features=feats, labels=labels, from_cache=True, meta=info.get("meta", {}))


def save(cache_dir: Path, key: str, fs: FeatureSet) -> Path:
    """Write ``fs`` atomically under ``key``; returns the file's path."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = _path(cache_dir, key)
    info = {"key": key, "layers": fs.layers, "meta": fs.meta}
    arrays = {f"f{i}": fs.features[layer] for i, layer in enumerate(fs.layers)}
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __info__=np.array(json.dumps(info)), __labels__=fs.labels, **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
