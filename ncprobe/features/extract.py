"""Per-layer features in a single forward pass.

Forward hooks on the probed modules capture their outputs, a pre-hook on the classifier captures
its input (``penultimate``) and the model's return value gives ``logits``; every capture is pooled
to one vector per sample on the device, so a whole model is probed for the cost of one forward pass.
The same code serves every model (timm, CIFAR ResNets, user classes): no per-model paths.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, nullcontext

import numpy as np
import torch

from ..checkpoint.loaded import LoadedCheckpoint
from ..data.batches import batch_loader
from ..data.source import DataSource
from ..data.transforms import Preprocess
from ..device import resolve_device
from ..errors import NcprobeError
from ..progress import progress_bar
from . import cache as feature_cache
from .featureset import FeatureSet
from .probe_points import ALL, LOGITS, PENULTIMATE, resolve_layers

REDUCTIONS = ("mean", "cls")


def pool(t: torch.Tensor, tokens: str = "mean", channels_last: bool = False) -> torch.Tensor:
    """One vector per sample: average over space for (N,C,H,W), over tokens for (N,L,C), as-is for (N,D)."""
    if t.dim() == 4:
        return t.mean(dim=(1, 2)) if channels_last else t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t[:, 0] if tokens == "cls" else t.mean(dim=1)
    if t.dim() == 2:
        return t
    return t.flatten(1)


def _logits_of(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        for key in ("logits", "out", "output"):
            if key in out:
                return out[key]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise NcprobeError("the model's forward returns no tensor of logits; wrap it so forward(x) returns logits")


def _channels_last_hints(ckpt: LoadedCheckpoint) -> set[str]:
    """Modules whose 4-D outputs are NHWC (some timm stages), from timm's feature_info."""
    info = getattr(ckpt.model, "feature_info", None)
    hints = set()
    if info is None:
        return hints
    try:
        entries = list(info) if not hasattr(info, "info") else list(info.info)
        fmt = getattr(ckpt.model, "output_fmt", None)
        for entry in entries:
            if str(fmt).upper().endswith("NHWC") and isinstance(entry, dict) and "module" in entry:
                hints.add(entry["module"])
    except Exception:  # noqa: BLE001 - feature_info varies across timm versions; hints are optional
        pass
    return hints


def checkpoint_id(ckpt: LoadedCheckpoint) -> str:
    if ckpt.sha256:
        return ckpt.sha256
    return ckpt.weights_fingerprint


def extract_features(
    ckpt: LoadedCheckpoint,
    source: DataSource,
    layers=None,
    *,
    device=None,
    batch_size: int = 256,
    cache_dir=None,
    use_cache: bool = True,
    progress: bool = True,
    workers: int = 0,
    amp: bool | None = None,
    tokens: str = "mean",
) -> FeatureSet:
    """Features of ``source`` at every probe point of ``ckpt``, from cache when possible.

    ``layers``: None (the checkpoint's default probe points), ``"all"``, or names. ``amp``: mixed
    precision (bf16 autocast), on by default on CUDA and off on CPU. ``tokens``: 'mean' or 'cls'
    pooling for (N, L, C) outputs.
    """
    if tokens not in REDUCTIONS:
        raise NcprobeError(f"unknown token reduction {tokens!r}; use one of {', '.join(REDUCTIONS)}")
    if len(source) == 0:
        raise NcprobeError(f"dataset {source.name!r} is empty; check the path or the classes=/n= options")
    dev = resolve_device(device)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    names = resolve_layers(ckpt.model, ckpt.head_name, ckpt.probe_layers, layers)
    if not ckpt.hookable:  # e.g. a TorchScript archive: no forward hooks
        if layers not in (None, []):
            raise NcprobeError(f"{ckpt.name} is a scripted model whose layers cannot be hooked; only its logits can be "
                               f"probed: drop --layers, or load the eager model with --arch")
        names = [LOGITS]
    size = tuple(ckpt.input_size[-2:])
    preprocess_desc = {"size": list(size), "mean": list(ckpt.mean), "std": list(ckpt.std), "amp": use_amp}
    if use_cache:
        key = feature_cache.cache_key(checkpoint_id(ckpt), source.fingerprint, preprocess_desc, names, f"pool:{tokens}")
        cache_dir = feature_cache.default_cache_dir() if cache_dir is None else cache_dir
        cached = feature_cache.load(cache_dir, key, source.name)
        if cached is not None:
            return cached

    fs = _forward(ckpt, source, names, dev, batch_size, progress, workers, use_amp, tokens, layers == ALL)
    fs.meta = {"dataset": source.spec, "checkpoint": ckpt.name, "seconds": fs.seconds}
    if use_cache:
        feature_cache.save(cache_dir, key, fs)
    return fs


def _forward(ckpt, source, names, dev, batch_size, progress, workers, use_amp, tokens, every_module) -> FeatureSet:
    model = ckpt.model
    was_training = model.training
    model.eval()
    orig_device = next(iter(model.parameters()), torch.empty(0)).device
    model.to(dev)
    preprocess = Preprocess(ckpt.mean, ckpt.std, tuple(ckpt.input_size[-2:])).to(dev)
    n_total = len(source)
    modules = dict(model.named_modules())
    hooked = [n for n in names if n not in (PENULTIMATE, LOGITS)]
    nhwc = _channels_last_hints(ckpt)
    captured: dict[str, torch.Tensor] = {}
    batch_n = [0]

    def make_hook(name):
        def hook(_mod, _inp, out):
            if isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[0] == batch_n[0]:
                captured[name] = pool(out, tokens, name in nhwc)

        return hook

    def head_hook(_mod, args):
        if args and isinstance(args[0], torch.Tensor):
            captured[PENULTIMATE] = pool(args[0], tokens)

    out_arrays: dict[str, np.ndarray] = {}
    labels = np.empty(n_total, dtype=np.int64)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if use_amp else nullcontext()
    loader = batch_loader(source, batch_size, size=tuple(ckpt.input_size[-2:]), workers=workers,
                          pin_memory=dev.type == "cuda")
    bar = progress_bar(n_total, f"features {source.name}", progress, unit="img", unit_scale=True)
    start = time.perf_counter()
    kept = list(names)
    try:
        with ExitStack() as stack, torch.inference_mode():
            for name in hooked:
                stack.callback(modules[name].register_forward_hook(make_hook(name)).remove)
            if PENULTIMATE in names:
                stack.callback(ckpt.head.register_forward_pre_hook(head_hook).remove)
            pos = 0
            for images, y in loader:
                n = images.shape[0]
                batch_n[0] = n
                captured.clear()
                x = preprocess(images.to(dev, non_blocking=True))
                with autocast:
                    captured[LOGITS] = _logits_of(model(x))
                if pos == 0:
                    kept = _check_first_batch(names, captured, every_module)
                    for name in kept:
                        out_arrays[name] = np.empty((n_total, captured[name].shape[1]), dtype=np.float32)
                for name in kept:
                    t = captured.get(name)
                    if t is None:
                        raise NcprobeError(f"layer {name!r} produced no tensor for a batch; drop it from --layers")
                    out_arrays[name][pos : pos + n] = t.detach().float().cpu().numpy()
                labels[pos : pos + n] = y.numpy()
                pos += n
                bar.update(n)
    finally:
        bar.close()
        model.to(orig_device)
        model.train(was_training)
    seconds = time.perf_counter() - start
    return FeatureSet(name=source.name, layers=kept, features=out_arrays, labels=labels, seconds=seconds)


def _check_first_batch(names, captured, every_module) -> list[str]:
    """The probe points that produced a tensor, in the order the forward pass produced them.

    Execution order is the true depth order: a container (``encoder``) finishes after its children,
    which module-registration order would get wrong. ``captured`` is filled in firing order.
    """
    for name in names:
        if name not in captured and (not every_module or name in (PENULTIMATE, LOGITS)):
            what = "the classifier head was never called" if name == PENULTIMATE else "it returned no tensor"
            raise NcprobeError(f"layer {name!r} cannot be probed: {what}; choose another with --layers")
    wanted = set(names)
    return [name for name in captured if name in wanted]
