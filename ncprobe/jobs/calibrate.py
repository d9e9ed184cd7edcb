"""The normalization (and input size) a checkpoint expects, when nothing says it: never silent.

When neither the flags, the file nor ``checkpoints.yaml`` give the mean/std (their origin is
``default``) and a labelled set is at hand, every standard candidate is tried on a fixed, seeded
sample of that set and the one with the lowest mean negative log-likelihood of the true labels is
chosen (origin ``calibrated``). The input size is treated the same way when the architecture's
default and the data's native size differ and nothing fixed the size. The choice is reported in
one line; it enters the feature cache key and every CSV row (``mean``, ``std``, ``norm_origin``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint.loaded import LoadedCheckpoint
from ..data.batches import batch_loader
from ..data.source import DataSource
from ..data.transforms import Preprocess
from ..device import resolve_device
from ..features.cache import default_cache_dir
from ..features.extract import architecture_fingerprint, checkpoint_id
from ..models.spec import NORMALIZATIONS
from .extract import bounded_batch

CALIBRATION_SAMPLES = 1000
CALIBRATION_SEED = 0
_FIXED = ("flag", "file", "registry")


def needs_calibration(ckpt: LoadedCheckpoint) -> bool:
    """True when the mean/std are only the architecture's defaults."""
    done = (*_FIXED, "calibrated")
    return ckpt.origin.get("mean") not in done and ckpt.origin.get("std") not in done


def _native_size(source: DataSource) -> tuple[int, int] | None:
    images = getattr(source, "images", None)
    if images is not None and getattr(images, "ndim", 0) == 4:
        return int(images.shape[1]), int(images.shape[2])
    return None


@torch.no_grad()
def _nll(model, source, idx, mean, std, size, device, batch_size) -> float:
    sample = source.subset(idx, "calibration")
    pre = Preprocess(mean, std, size).to(device)
    native = getattr(source, "images", None)
    side = max(size) if native is None or getattr(native, "ndim", 0) != 4 else max(*size, *native.shape[1:3])
    batch_size = bounded_batch(batch_size, (3, side, side))
    total, n = 0.0, 0
    for x, y in batch_loader(sample, batch_size, size=size):
        logits = model(pre(x.to(device))).float()
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        y = y.to(device)
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        n += len(y)
    return total / max(n, 1)


def _measure(ckpt, source, idx, norms, sizes, device, batch_size) -> dict:
    """Mean NLL of every (normalization, size) candidate that runs and gives a finite value."""
    dev = resolve_device(device)
    model = ckpt.model
    was = next(iter(model.parameters()), torch.empty(0)).device
    model.to(dev).eval()
    scores = {}
    try:
        for name, (m, s) in norms.items():
            for size in sizes:
                try:
                    value = _nll(model, source, idx, m, s, size, dev, batch_size)
                except RuntimeError:  # this size does not fit the model: not a candidate
                    continue
                if np.isfinite(value):
                    scores[(name, size)] = value
    finally:
        model.to(was)
    return scores


def _cache_key(ckpt, source, idx, norms, sizes) -> str | None:
    """The calibration depends on the weights, the architecture's code, the sample and the
    candidates; None when the architecture cannot be fingerprinted (then nothing is cached)."""
    try:
        arch = architecture_fingerprint(ckpt)
    except Exception:  # noqa: BLE001 - an unfingerprintable model is calibrated every time
        return None
    payload = {"v": 1, "checkpoint": checkpoint_id(ckpt), "arch": arch, "data": source.fingerprint,
               "idx": hashlib.sha256(np.asarray(idx, np.int64).tobytes()).hexdigest(),
               "norms": {k: [list(m), list(s)] for k, (m, s) in norms.items()}, "sizes": [list(z) for z in sizes]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cache_path(cache_dir, key: str) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "calibration" / f"{key}.json"


def _read_cached(cache_dir, key) -> dict | None:
    """The scores a previous run measured, or None (absent, unreadable or damaged: measure again)."""
    if key is None:
        return None
    try:
        rows = json.loads(_cache_path(cache_dir, key).read_text())
        return {(str(name), (int(h), int(w))): float(v) for name, h, w, v in rows}
    except (OSError, ValueError, TypeError):
        return None


def _write_cached(cache_dir, key, scores: dict) -> None:
    """Best effort, atomic: a cache that cannot be written only means measuring next time."""
    if key is None:
        return
    path = _cache_path(cache_dir, key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps([[name, size[0], size[1], value] for (name, size), value in scores.items()]))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def calibrate(ckpt: LoadedCheckpoint, source: DataSource, *, device=None, batch_size: int = 256,
              candidates: dict | None = None, samples: int = CALIBRATION_SAMPLES, cache_dir=None,
              use_cache: bool = True) -> str | None:
    """Choose ``ckpt``'s mean/std (and input size) on the labelled ``source``, in place; returns the
    one-line report, or None when nothing needed calibrating (or the set has no usable labels).
    The candidates' NLLs are cached beside the features (``<cache>/calibration``), so a rerun on
    cached features does not run the model again."""
    labels = np.asarray(source.labels)
    usable = np.flatnonzero((labels >= 0) & (labels < ckpt.num_classes))
    norm_free = needs_calibration(ckpt)
    native = _native_size(source)
    arch_size = tuple(ckpt.input_size[-2:])
    sizes = [arch_size]
    if ckpt.origin.get("input_size") not in _FIXED and native is not None and native != arch_size:
        sizes = [native, arch_size]
    if (not norm_free and len(sizes) == 1) or usable.size < 2 or ckpt.input_size[0] != 3:
        return None
    rng = np.random.default_rng(CALIBRATION_SEED)
    take = min(samples if max(arch_size) < 128 else min(samples, 256), usable.size)
    idx = np.sort(rng.choice(usable, size=take, replace=False))
    norms = dict(candidates or NORMALIZATIONS) if norm_free else {"as loaded": (ckpt.mean, ckpt.std)}
    key = _cache_key(ckpt, source, idx, norms, sizes) if use_cache else None
    scores = _read_cached(cache_dir, key)
    if scores is None:
        scores = _measure(ckpt, source, idx, norms, sizes, device, batch_size)
        _write_cached(cache_dir, key, scores)
    if not scores:  # nothing ran or every candidate gave NaN: the run's own checks will say why
        return None
    (best_norm, best_size), best = min(scores.items(), key=lambda kv: kv[1])
    if norm_free:
        ckpt.mean, ckpt.std = tuple(norms[best_norm][0]), tuple(norms[best_norm][1])
        ckpt.origin["mean"] = ckpt.origin["std"] = "calibrated"
    if len(sizes) > 1:
        ckpt.input_size = (ckpt.input_size[0], *best_size)
        ckpt.origin["input_size"] = "calibrated"
    others = sorted((v, k) for k, v in scores.items() if k != (best_norm, best_size))[:3]

    def label(key):
        name, size = key
        return name if len(sizes) == 1 else f"{name} @{size[0]}x{size[1]}"

    what = "normalization" if len(sizes) == 1 else ("normalization and input size" if norm_free else "input size")
    rest = ", ".join(f"{label(k)} {v:.2f}" for v, k in others)
    return (f"{what}: calibrated -> {label((best_norm, best_size))} (NLL {best:.2f} on {take} images of "
            f"{source.name}{'; vs ' + rest if rest else ''}); pass --mean/--std/--input-size to fix it")


def assumption_warning(ckpt: LoadedCheckpoint) -> str | None:
    """The one-line warning for a run with no labelled set to calibrate on."""
    if not needs_calibration(ckpt):
        return None
    return (f"normalization: nothing says what {ckpt.name} expects and there is no labelled set to calibrate on; "
            f"assuming mean {','.join(f'{v:g}' for v in ckpt.mean)} std {','.join(f'{v:g}' for v in ckpt.std)} "
            "(pass --mean/--std to fix it)")
