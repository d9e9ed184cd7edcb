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
import weakref
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
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


@dataclass
class _Job:
    """One checkpoint's pending extraction of one source: what to probe and where to cache it."""

    ckpt: LoadedCheckpoint
    names: list[str]  # the probe points the forward pass must capture (those not cached)
    every_module: bool
    base: str | None = None  # the set's cache key (None: no cache)
    cached: dict = field(default_factory=dict)  # layer -> (features, order, entry meta) read from the cache
    unreadable: set = field(default_factory=set)  # layers whose entry we may not read: never overwritten
    dtype: str = "float32"  # how the features are stored (float16 halves memory and disk)


#: the cache entry of an every-module (``--layers all``) run that lists the modules which gave a tensor
_KEPT = "#kept"


#: the dtypes features may be stored in (``--cache-dtype``)
FEATURE_DTYPES = ("float32", "float16")


def feature_array(n: int, d: int, dtype: str = "float32") -> np.ndarray:
    """An (n, d) array for one layer's features: in memory when it is small against the memory
    budget (:mod:`ncprobe.budget`), else a memory-mapped file in the temp folder (``$TMPDIR``),
    already unlinked, whose pages the OS writes out and reads back as needed, so a set larger
    than the budget never has to fit in RAM."""
    from ..budget import memory_budget

    nbytes = int(n) * int(d) * np.dtype(dtype).itemsize
    if nbytes <= memory_budget() // 16:
        return np.empty((n, d), dtype=dtype)
    import tempfile

    handle = tempfile.TemporaryFile(prefix="ncprobe-features-")
    try:
        handle.truncate(max(nbytes, 1))
        return np.memmap(handle, dtype=dtype, mode="r+", shape=(n, d))
    except OSError as exc:
        raise NcprobeError(f"cannot spill {nbytes / 2**30:.1f} GiB of features to the temp folder "
                           f"({exc.strerror or type(exc).__name__}); free disk space there, set TMPDIR to a "
                           "larger disk, or raise the memory budget (NCPROBE_MEMORY_BUDGET)") from None
    finally:
        handle.close()  # the mapping keeps the (unlinked) file alive


def _plan(ckpt, source, layers, *, dev, use_amp, tokens, use_cache, cache_dir, dtype="float32"):
    """(cached FeatureSet or None, the pending job, cache dir). With the cache, every requested layer
    found there is read (per-layer entries) and only the others are left for the forward pass."""
    names = resolve_layers(ckpt.model, ckpt.head_name, ckpt.probe_layers, layers)
    if not ckpt.hookable:  # e.g. a TorchScript archive: no forward hooks
        if layers not in (None, []):
            raise NcprobeError(f"{ckpt.name} is a scripted model whose layers cannot be hooked; only its logits can be "
                               f"probed: drop --layers, or load the eager model with --arch")
        names = [LOGITS]
    if dtype not in FEATURE_DTYPES:
        raise NcprobeError(f"unknown feature dtype {dtype!r}; use one of {', '.join(FEATURE_DTYPES)}")
    job = _Job(ckpt=ckpt, names=names, every_module=layers == ALL, dtype=dtype)
    size = tuple(ckpt.input_size[-2:])
    preprocess_desc = {"size": list(size), "mean": list(ckpt.mean), "std": list(ckpt.std), "amp": use_amp,
                       **({"items": ckpt.preprocessing.key()} if source.images is None else {})}
    if use_cache:
        try:
            arch_desc = architecture_fingerprint(ckpt)
        except Exception as exc:  # noqa: BLE001 - odd user code: run without the cache rather than key it wrongly
            warnings.warn(f"cannot tell what code computes {ckpt.name}'s features ({type(exc).__name__}); "
                          f"not using the feature cache", stacklevel=3)
            use_cache = False
    if not use_cache:
        return None, job, cache_dir
    cache_dir = feature_cache.default_cache_dir() if cache_dir is None else cache_dir
    stored = f"pool:{tokens}" + ("" if dtype == "float32" else f"|{dtype}")
    job.base = feature_cache.set_key(checkpoint_id(ckpt), source.fingerprint, preprocess_desc, stored,
                                     architecture=arch_desc)
    wanted = names
    if job.every_module:
        marker, _ = feature_cache.lookup(cache_dir, feature_cache.layer_key(job.base, _KEPT), source.name)
        kept = (marker.meta.get("kept") if marker is not None else None) or None
        if isinstance(kept, list) and set(kept) <= set(names):
            wanted = kept
    labels = None
    for name in wanted:
        fs, state = feature_cache.lookup(cache_dir, feature_cache.layer_key(job.base, name), source.name)
        ok = (fs is not None and fs.layers == [name] and len(fs) == len(source)
              and isinstance(fs.meta.get("order"), int) and (labels is None or np.array_equal(fs.labels, labels)))
        if ok:
            labels = fs.labels
            job.cached[name] = (fs[name], fs.meta["order"], fs.meta)
        elif state == feature_cache.UNREADABLE:
            job.unreadable.add(name)
    if len(job.cached) == len(wanted):
        return _assemble(source.name, job.cached, labels, from_cache=True), job, cache_dir
    job.names = [n for n in wanted if n not in job.cached]
    return None, job, cache_dir


def _assemble(name: str, parts: dict, labels, *, from_cache: bool, seconds: float = 0.0, meta=None) -> FeatureSet:
    """A FeatureSet from layer -> (array, order, ...), its layers in forward (firing) order."""
    layers = sorted(parts, key=lambda layer: parts[layer][1])
    first_meta = next(iter(parts.values()))[2] if parts else {}
    meta = dict(meta if meta is not None else {k: v for k, v in first_meta.items() if k != "order"})
    return FeatureSet(name=name, layers=layers, features={k: parts[k][0] for k in layers}, labels=labels,
                      from_cache=from_cache, seconds=seconds, meta=meta)


#: model -> its firing order (it depends on the architecture only, so once per model object)
_FIRING_ORDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def firing_order(ckpt: LoadedCheckpoint) -> dict[str, int]:
    """Every probe point's position in the order a forward pass produces them (modules by the end of
    their forward, ``penultimate`` when the classifier is entered, ``logits`` last), from one forward
    pass of two blank images with a hook on every module (once per model object). Cached layers are
    sorted by it, so that a set assembled from entries of different runs has the layer order of one
    fresh extraction."""
    if not ckpt.hookable:
        return {LOGITS: 0}
    known = _FIRING_ORDERS.get(ckpt.model)
    if known is None:
        known = _FIRING_ORDERS[ckpt.model] = _measure_firing_order(ckpt)
    return dict(known)


def _measure_firing_order(ckpt: LoadedCheckpoint) -> dict[str, int]:
    model = ckpt.model
    order: dict[str, int] = {}
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((2, *tuple(int(v) for v in ckpt.input_size)), device=device)

    def seen(name):
        def hook(*_):
            order.setdefault(name, len(order))

        return hook

    was = model.training
    model.eval()
    try:
        with ExitStack() as stack, torch.inference_mode():
            for name, module in model.named_modules():
                if name:
                    stack.callback(module.register_forward_hook(seen(name)).remove)
            stack.callback(ckpt.head.register_forward_pre_hook(seen(PENULTIMATE)).remove)
            model(x)
    except Exception:  # noqa: BLE001 - an odd model: fall back to the order of one extraction
        return {}
    finally:
        model.train(was)
    order[LOGITS] = len(order)
    return order


def _finish(job: _Job, fs: FeatureSet, source, where) -> FeatureSet:
    """Merge a forward pass's layers with the job's cached ones and file the new ones in the cache."""
    if job.base is None:
        return fs
    global_order = firing_order(job.ckpt)
    fallback = len(global_order)
    parts = dict(job.cached)
    for i, layer in enumerate(fs.layers):
        parts[layer] = (fs[layer], global_order.get(layer, fallback + i), fs.meta)
    for layer in fs.layers:
        if layer in job.unreadable:  # never overwrite an entry we may not read
            continue
        one = FeatureSet(name=fs.name, layers=[layer], features={layer: fs[layer]}, labels=fs.labels,
                         meta={**fs.meta, "order": int(parts[layer][1])})
        feature_cache.save(where, feature_cache.layer_key(job.base, layer), one)
    merged = _assemble(fs.name, parts, fs.labels, from_cache=False, seconds=fs.seconds,
                       meta={**fs.meta, "cached_layers": sorted(job.cached)})
    if job.every_module:
        marker = FeatureSet(name=fs.name, layers=[], features={}, labels=fs.labels, meta={"kept": merged.layers})
        feature_cache.save(where, feature_cache.layer_key(job.base, _KEPT), marker)
    return merged


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
    dtype: str = "float32",
) -> FeatureSet:
    """Features of ``source`` at every probe point of ``ckpt``, from cache when possible.

    ``layers``: None (the checkpoint's default probe points), ``"all"``, or names. ``amp``: mixed
    precision (bf16 autocast), on by default on CUDA and off on CPU. ``tokens``: 'mean' or 'cls'
    pooling for (N, L, C) outputs. ``dtype``: how the features are stored, float32 or float16
    (half the memory and disk; the scorers compute in float64 either way).
    """
    return extract_many([ckpt], source, layers, device=device, batch_size=batch_size, cache_dir=cache_dir,
                        use_cache=use_cache, progress=progress, workers=workers, amp=amp, tokens=tokens,
                        dtype=dtype)[0]


def extract_many(
    ckpts: list[LoadedCheckpoint],
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
    shard_summary=None,
    dtype: str = "float32",
) -> list[FeatureSet | None]:
    """:func:`extract_features` of ``source`` for several checkpoints, reading the source once.

    Checkpoints whose features are cached are served from the cache; the others share one pass
    over the source's batches (one pass per distinct input size for sources decoded per item,
    whose images are resized while they are read), each batch going through every model in turn.
    The features equal those of separate calls.

    Under torch.distributed (:mod:`ncprobe.distributed`) each rank runs its share of the batches
    and rank 0 receives the whole sets (the other ranks get None); ``shard_summary(index, fs)``,
    when given, is computed on each rank's share of checkpoint ``index``'s features and the list
    of them, in rank order, is handed to rank 0 as ``fs.shard_summaries``.
    """
    from ..distributed import broadcast_from_main, world

    if tokens not in REDUCTIONS:
        raise NcprobeError(f"unknown token reduction {tokens!r}; use one of {', '.join(REDUCTIONS)}")
    if len(source) == 0:
        raise NcprobeError(f"dataset {source.name!r} is empty; check the path or the classes=/n= options")
    dev = resolve_device(device)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    w = world()
    results: list[FeatureSet | None] = []
    jobs: list[_Job] = []
    where = cache_dir
    for ckpt in ckpts:
        cached, job, where = _plan(ckpt, source, layers, dev=dev, use_amp=use_amp, tokens=tokens,
                                   use_cache=use_cache, cache_dir=cache_dir, dtype=dtype)
        results.append(cached)
        jobs.append(job)
    # rank 0's cache decides for everyone which checkpoints (and layers) need the forward pass
    plan = broadcast_from_main([(i, job.names) for i, job in enumerate(jobs) if results[i] is None])
    if not w.is_main:
        results = [None] * len(ckpts)
    for i, names in plan:
        jobs[i].names = list(names)
    pending = [(i, jobs[i]) for i, _ in plan]
    # item sources are resized while read: one pass per input size; in-memory arrays: one pass for all
    passes: dict = {}
    for i, job in pending:
        size = tuple(job.ckpt.input_size[-2:]) if source.images is None else None
        passes.setdefault(size, []).append((i, job))
    for size, group in passes.items():
        if w.distributed:
            feature_sets = _forward_sharded(group, source, dev, batch_size, progress, workers, use_amp, tokens, size,
                                            shard_summary)
        else:
            feature_sets = _forward(group, source, dev, batch_size, progress, workers, use_amp, tokens, size)
            if shard_summary is not None:
                for (i, _), fs in zip(group, feature_sets, strict=True):
                    fs.shard_summaries = [shard_summary(i, fs)]
        if feature_sets is None:  # a rank other than 0: its share went to rank 0
            continue
        for (i, job), fs in zip(group, feature_sets, strict=True):
            fs.meta = {"dataset": source.spec, "checkpoint": job.ckpt.name, "seconds": fs.seconds}
            results[i] = _finish(job, fs, source, where)
    return results


def _forward_sharded(group, source, dev, batch_size, progress, workers, use_amp, tokens, size, shard_summary):
    """This rank's batches of ``source`` through every model of ``group``; on rank 0 the whole sets
    assembled in the source's order, elsewhere None.

    Every rank first shares what it holds (rows, layers, widths, statistics: small); the feature
    arrays then travel to rank 0 one block at a time (at most a sixteenth of the memory budget from
    all ranks together), straight into rank 0's arrays, which spill to disk when large."""
    from ..budget import memory_budget
    from ..distributed import all_gather, gather_to_main, shard_rows, world

    w = world()
    rows = shard_rows(len(source), batch_size, w.rank, w.size)
    sets = None
    if rows.size:
        shard = source.subset(rows, "")
        sets = _forward(group, shard, dev, batch_size, progress and w.is_main, workers, use_amp, tokens, size)
    head = None if sets is None else [
        (fs.layers, {k: (fs[k].shape[1], str(fs[k].dtype)) for k in fs.layers}, fs.labels, fs.seconds,
         None if shard_summary is None else shard_summary(i, fs)) for (i, _), fs in zip(group, sets, strict=True)]
    heads = all_gather((rows, head, memory_budget()), "sharing what each rank extracted")
    holders = [(r, rr, hh) for r, (rr, hh, _) in enumerate(heads) if hh is not None]
    budget = min(b for _, _, b in heads)  # one block size for all ranks: the same number of collectives
    n = len(source)
    out = []
    for j in range(len(group)):
        layers = list(holders[0][2][j][0])
        for _, _, hh in holders:
            if list(hh[j][0]) != layers:
                raise NcprobeError(f"the ranks probed different layers of {group[j][1].ckpt.name} ({layers} vs "
                                   f"{list(hh[j][0])}); give the same --layers to every rank")
        widths = holders[0][2][j][1]
        arrays = ({k: feature_array(n, widths[k][0], widths[k][1]) for k in layers} if w.is_main else {})
        for k in layers:
            row_bytes = widths[k][0] * np.dtype(widths[k][1]).itemsize
            block = max(1, budget // 16 // max(1, row_bytes * w.size))
            longest = max(len(rr) for _, rr, _ in holders)
            for start in range(0, longest, block):
                mine = None if sets is None else sets[j][k][start : start + block]
                got = gather_to_main(mine, "gathering features")
                if w.is_main:
                    for r, rr, _ in holders:
                        if got[r] is not None and len(got[r]):
                            arrays[k][rr[start : start + len(got[r])]] = got[r]
        if not w.is_main:
            continue
        labels = np.full(n, -1, dtype=np.int64)
        for _, rr, hh in holders:
            labels[rr] = hh[j][2]
        fs = FeatureSet(name=source.name, layers=layers, features=arrays, labels=labels,
                        seconds=max(hh[j][3] for _, _, hh in holders))
        fs.shard_summaries = [hh[j][4] for _, _, hh in holders] if shard_summary is not None else None
        out.append(fs)
    return out if w.is_main else None


class _Probe:
    """Hooks on one model that capture its probe points during a forward pass, pooled on the device."""

    def __init__(self, job: _Job, dev, tokens: str, n_total: int):
        self.job = job
        self.ckpt = ckpt = job.ckpt
        self.model = ckpt.model
        self.dev = dev
        self.tokens = tokens
        self.n_total = n_total
        self.preprocess = Preprocess(ckpt.mean, ckpt.std, tuple(ckpt.input_size[-2:]), items=ckpt.preprocessing).to(dev)
        self.nhwc = _channels_last_hints(ckpt)
        self.captured: dict[str, torch.Tensor] = {}
        self.batch_n = 0
        self.kept = list(job.names)
        self.arrays: dict[str, np.ndarray] = {}

    def attach(self, stack: ExitStack) -> None:
        """Eval mode on ``dev`` with the hooks registered; ``stack`` restores the model when it closes."""
        model = self.model
        was_training = model.training
        orig_device = next(iter(model.parameters()), torch.empty(0)).device
        stack.callback(model.train, was_training)
        stack.callback(model.to, orig_device)
        model.eval()
        model.to(self.dev)
        modules = dict(model.named_modules())
        for name in self.job.names:
            if name not in (PENULTIMATE, LOGITS):
                stack.callback(modules[name].register_forward_hook(self._hook(name)).remove)
        if PENULTIMATE in self.job.names:
            stack.callback(self.ckpt.head.register_forward_pre_hook(self._head_hook).remove)

    def _hook(self, name):
        def hook(_mod, _inp, out):
            if isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[0] == self.batch_n:
                self.captured[name] = pool(out, self.tokens, name in self.nhwc)

        return hook

    def _head_hook(self, _mod, args):
        if args and isinstance(args[0], torch.Tensor):
            self.captured[PENULTIMATE] = pool(args[0], self.tokens)

    def run(self, images: torch.Tensor, pos: int, autocast) -> None:
        """Forward one batch of raw uint8 images and store its pooled features at rows ``pos:``."""
        n = images.shape[0]
        self.batch_n = n
        self.captured.clear()
        x = self.preprocess(images)
        with autocast:
            self.captured[LOGITS] = _logits_of(self.model(x))
        if pos == 0:
            self.kept = _check_first_batch(self.job.names, self.captured, self.job.every_module)
            for name in self.kept:
                self.arrays[name] = feature_array(self.n_total, self.captured[name].shape[1], self.job.dtype)
        for name in self.kept:
            t = self.captured.get(name)
            if t is None:
                raise NcprobeError(f"layer {name!r} produced no tensor for a batch; drop it from --layers")
            values = t.detach().float().cpu().numpy()
            if self.job.dtype == "float16":
                _check_float16_range(values, name, self.ckpt.name)
            self.arrays[name][pos : pos + n] = values


def _check_float16_range(values: np.ndarray, layer: str, model: str) -> None:
    """Finite features beyond float16's range would be stored as inf: a one-line error instead."""
    finite = values[np.isfinite(values)]
    peak = float(np.abs(finite).max(initial=0.0))
    if peak > np.finfo(np.float16).max:
        raise NcprobeError(f"layer {layer!r} of {model} has values beyond float16's range (|x| up to {peak:.3g}); "
                           "use --cache-dtype float32")


def _forward(group, source, dev, batch_size, progress, workers, use_amp, tokens, size) -> list[FeatureSet]:
    """One pass over ``source``'s batches, each batch through every model of ``group``."""
    n_total = len(source)
    probes = [_Probe(job, dev, tokens, n_total) for _, job in group]
    labels = np.empty(n_total, dtype=np.int64)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if use_amp else nullcontext()
    load_size = size if size is not None else tuple(probes[0].ckpt.input_size[-2:])
    loader = batch_loader(source, batch_size, size=load_size, workers=workers, pin_memory=dev.type == "cuda",
                          preprocess=[p.preprocess for p in probes])
    models = "" if len(probes) == 1 else f" x {len(probes)} models"
    bar = progress_bar(n_total, f"features {source.name}{models}", progress, unit="img", unit_scale=True)
    start = time.perf_counter()
    seconds = [0.0] * len(probes)
    try:
        with ExitStack() as stack, torch.inference_mode():
            for probe in probes:
                probe.attach(stack)
            pos = 0
            for images, y in loader:
                n = images.shape[0]
                images = images.to(dev, non_blocking=True)
                for j, probe in enumerate(probes):
                    t0 = time.perf_counter()
                    probe.run(images, pos, autocast)
                    seconds[j] += time.perf_counter() - t0
                labels[pos : pos + n] = y.numpy()
                pos += n
                bar.update(n)
    finally:
        bar.close()
    if len(probes) == 1:
        seconds = [time.perf_counter() - start]
    return [FeatureSet(name=source.name, layers=probe.kept, features=probe.arrays, labels=labels.copy(),
                       seconds=sec) for probe, sec in zip(probes, seconds, strict=True)]


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
