"""Per-layer features in a single forward pass.

Forward hooks on the probed modules capture their outputs, a pre-hook on the classifier captures
its input (``penultimate``) and the model's return value gives ``logits``; every capture is pooled
to one vector per sample on the device, so a whole model is probed for the cost of one forward pass.
The same code serves every model (timm, CIFAR ResNets, user classes): no per-model paths.
Results are cached on disk (:mod:`.cache`) under a key that covers the architecture's code too
(:func:`architecture_fingerprint`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import time
import types
import warnings
from contextlib import ExitStack, nullcontext
from pathlib import Path

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
    hints = set(ckpt.metadata.get("channels_last_layers") or ())
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


# ---------------------------------------------------------------- what the architecture's code is

#: packages whose code is identified by their version (and, for ncprobe, a hash of its own files)
_VERSIONED = ("torch", "torchvision", "timm", "ncprobe")
#: ncprobe's code that builds, loads and runs a model and turns its outputs into features
NCPROBE_CODE = ("models/**/*.py", "checkpoint/**/*.py", "features/extract.py", "features/probe_points.py",
                "data/transforms.py", "data/batches.py")


def architecture_fingerprint(ckpt: LoadedCheckpoint) -> dict:
    """Everything about the code that computes the features, for the cache key.

    ``arch`` (the name: registered, ``timm:NAME``, ``path.py:Class``, ``pkg.module:Class``), the model's
    class and classifier, the versions of Python, torch, torchvision, timm and ncprobe, a hash of
    ncprobe's own architecture and extraction code (:data:`NCPROBE_CODE`), and for code outside those
    packages: the sha256 of each source file (the file or module named by ``arch`` and the file of
    every class in the model's modules and their bases) plus a digest of the code actually loaded
    from it (its functions' bytecode and constants), so a file edited after it was imported in a
    long-lived process (a notebook) cannot file the old code's features under the new file's key.
    """
    model = ckpt.model
    modules: dict[str, types.ModuleType | None] = {}
    classes: dict[str, set] = {}
    for sub in model.modules():
        for cls in type(sub).__mro__:
            name = getattr(cls, "__module__", None) or ""
            if cls is not object and name.split(".")[0] not in _VERSIONED and name != "builtins":
                modules.setdefault(name, sys.modules.get(name))
                classes.setdefault(name, set()).add(cls)
    files: set[Path] = set()
    named = _named_arch_file(ckpt.arch)
    if named is not None:
        files.add(named)
    loaded, packages = [], {}
    for name in sorted(modules):
        mod = modules[name]
        file = getattr(mod, "__file__", None)
        if file:
            files.add(Path(file))
        loaded.append(_module_code_digest(mod, classes[name]) if mod is not None else f"unloaded:{name}")
        top = name.split(".")[0]
        packages[top] = _distribution_version(top)
    script = _script_code_digest(model)
    unique = {os.path.realpath(f) for f in files}  # `mynet.py` and the module's absolute __file__ are one file
    return {
        "arch": str(ckpt.arch or ""),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "head": ckpt.head_name,
        "hookable": bool(ckpt.hookable),
        "versions": _versions(),
        "ncprobe_code": ncprobe_code_digest(),
        "packages": packages,
        "files": sorted(_file_digest(Path(f)) for f in unique),
        "loaded_code": loaded,
        **({"script_code": script} if script else {}),
    }


def _named_arch_file(arch) -> Path | None:
    """The source file of a user architecture: the file of ``path.py:Class``, the module of ``pkg.module:Class``."""
    arch = str(arch or "")
    target, _, attr = arch.rpartition(":")
    if not target or not attr or arch.startswith("timm:"):
        return None
    if target.endswith(".py") or "/" in target or "\\" in target:
        return Path(target).expanduser()
    mod = sys.modules.get(target)
    file = getattr(mod, "__file__", None)
    if file is None:
        try:
            spec = importlib.util.find_spec(target)
            file = spec.origin if spec is not None and spec.has_location else None
        except Exception:  # noqa: BLE001 - an unimportable name: the arch string itself still keys the entry
            file = None
    return Path(file) if file else None


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable:{path}:{type(exc).__name__}"


@functools.lru_cache(maxsize=None)
def _versions() -> dict:
    from .. import __version__

    out = {"python": "%d.%d" % sys.version_info[:2], "torch": torch.__version__, "ncprobe": __version__}
    for dist in ("torchvision", "timm"):
        out[dist] = _distribution_version(dist)
    return out


@functools.lru_cache(maxsize=None)
def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except Exception:  # noqa: BLE001 - not installed as a distribution (a local module)
        mod = sys.modules.get(name)
        version = getattr(mod, "__version__", None)
        return str(version) if version is not None else None


def code_tree_digest(root: Path, patterns=NCPROBE_CODE) -> str:
    """sha256 over the relative paths and contents of the files under ``root`` matching ``patterns``."""
    root = Path(root)
    h = hashlib.sha256()
    found = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    for p in found:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def ncprobe_code_digest() -> str:
    """:func:`code_tree_digest` of the installed ncprobe (once per process: that is the code that runs)."""
    return code_tree_digest(Path(__file__).resolve().parents[1])


_LITERALS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))


def _literal(value, depth: int = 0) -> str | None:
    """A deterministic text for simple values (sets sorted: their order varies between processes), else None."""
    if isinstance(value, _LITERALS):
        return repr(value)
    if depth > 4:
        return None
    if isinstance(value, (tuple, list)):
        parts = [_literal(v, depth + 1) for v in value]
        return None if None in parts else f"{type(value).__name__}({','.join(parts)})"
    if isinstance(value, (set, frozenset)):
        parts = [_literal(v, depth + 1) for v in value]
        return None if None in parts else f"set({','.join(sorted(parts))})"
    if isinstance(value, dict):
        parts = [(_literal(k, depth + 1), _literal(v, depth + 1)) for k, v in value.items()]
        return None if any(None in kv for kv in parts) else f"dict({','.join(sorted(f'{k}:{v}' for k, v in parts))})"
    return None


def _hash_code(h, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_argcount, code.co_flags)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(h, const)
        else:
            h.update((_literal(const) or type(const).__name__).encode())


def _hash_function(h, fn) -> None:
    fn = getattr(fn, "__func__", fn)  # staticmethod / classmethod / bound method
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType):
        _hash_code(h, code)
        for defaults in (getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None)):
            if defaults:
                h.update((_literal(defaults) or repr(sorted(map(type, defaults), key=str))).encode())


def _hash_class(h, cls, seen) -> None:
    if cls in seen:
        return
    seen.add(cls)
    for attr, value in sorted(vars(cls).items(), key=lambda kv: kv[0]):
        h.update(attr.encode() + b"=")
        if isinstance(value, property):
            for part in (value.fget, value.fset):
                if part is not None:
                    _hash_function(h, part)
        elif isinstance(value, type):
            _hash_class(h, value, seen)
        elif callable(value) or isinstance(value, (staticmethod, classmethod)):
            _hash_function(h, value)
        else:
            h.update((_literal(value) or type(value).__name__).encode())


def _module_code_digest(mod: types.ModuleType, classes=()) -> str:
    """A digest of the code loaded from ``mod``: its functions' and classes' bytecode and constants, and its
    simple module-level constants. Deterministic across processes for the same source and Python. For
    ``__main__`` (a script or notebook, whose globals change all the time) only ``classes``, the model's."""
    h = hashlib.sha256()
    seen: set = set()
    if mod.__name__ == "__main__":
        for cls in sorted(classes, key=lambda c: c.__qualname__):
            h.update(b"class " + cls.__qualname__.encode())
            _hash_class(h, cls, seen)
        return h.hexdigest()
    for attr, value in sorted(vars(mod).items(), key=lambda kv: kv[0]):
        if attr.startswith("__") or isinstance(value, types.ModuleType):
            continue
        origin = getattr(value, "__module__", None)
        if isinstance(value, type):
            if origin == mod.__name__:
                h.update(b"class " + attr.encode())
                _hash_class(h, value, seen)
        elif isinstance(value, types.FunctionType):
            if (origin or "").split(".")[0] not in _VERSIONED:
                h.update(b"def " + attr.encode())
                _hash_function(h, value)
        else:
            text = _literal(value)
            if text is not None:
                h.update(f"{attr}={text}".encode())
    return h.hexdigest()


def _script_code_digest(model) -> str | None:
    """For TorchScript and torch.fx modules (code that lives in the object, not in a source file): a
    digest of their generated code."""
    kinds = (torch.jit.ScriptModule, torch.fx.GraphModule)
    h, found = hashlib.sha256(), False
    for name, sub in model.named_modules():
        if isinstance(sub, kinds):
            found = True
            try:
                code = sub.code
            except Exception:  # noqa: BLE001 - a script module without forward has no code
                code = ""
            h.update(f"{name}\0{code}\0".encode())
    return h.hexdigest() if found else None


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
    state = None
    if use_cache:
        try:
            arch_desc = architecture_fingerprint(ckpt)
        except Exception as exc:  # noqa: BLE001 - odd user code: run without the cache rather than key it wrongly
            warnings.warn(f"cannot tell what code computes {ckpt.name}'s features ({type(exc).__name__}); "
                          f"not using the feature cache", stacklevel=2)
            use_cache = False
    if use_cache:
        key = feature_cache.cache_key(checkpoint_id(ckpt), source.fingerprint, preprocess_desc, names, f"pool:{tokens}",
                                      architecture=arch_desc)
        cache_dir = feature_cache.default_cache_dir() if cache_dir is None else cache_dir
        cached, state = feature_cache.lookup(cache_dir, key, source.name)
        if cached is not None:
            return cached

    fs = _forward(ckpt, source, names, dev, batch_size, progress, workers, use_amp, tokens, layers == ALL)
    fs.meta = {"dataset": source.spec, "checkpoint": ckpt.name, "seconds": fs.seconds}
    if use_cache and state != feature_cache.UNREADABLE:  # never overwrite an entry we may not read
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
