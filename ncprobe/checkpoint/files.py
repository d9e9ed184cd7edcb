"""Reading a checkpoint file of any supported format into tensors (or a module), safely.

Formats: ``torch.save`` zip and legacy files (read with ``weights_only=True``), safetensors,
TorchScript archives, and -- only when the user trusts the file -- full pickles of ``nn.Module``s.
Every failure becomes a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .script_tensors import read_script_tensors
from .state_dict import file_extras, find_module, find_state_dict

# Globals that rebuild plain data only (numpy scalars/arrays, argparse.Namespace): checkpoints often
# carry them next to the weights ('best_acc': np.float64, 'args': Namespace). They are allowed in
# the weights-only unpickler; anything else needs --trust-pickle.
_DATA_GLOBALS = {
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "argparse.Namespace",
}
_NUMPY_DTYPE = re.compile(r"numpy\.dtypes\.\w+DType")
# how the weights-only unpickler names what it refused: "GLOBAL a.b" or "... but got <class 'a.b'>"
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>")


def _refused_global(exc: BaseException) -> str | None:
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    m = _GLOBAL.search(str(exc))
    return (m.group(1) or m.group(2)) if m else None


@dataclass
class RawCheckpoint:
    """What a file holds, before any architecture is chosen."""

    path: Path
    format: str  # torch | torch-legacy | safetensors | torchscript
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None  # a trusted full pickle or a TorchScript module
    wrapper: tuple[str, ...] = ()  # keys the state_dict was found under
    extras: dict[str, Any] = field(default_factory=dict)  # scalars saved next to the weights
    file_meta: dict[str, str] = field(default_factory=dict)  # safetensors metadata
    unpickled_code: bool = False  # loaded with weights_only=False (--trust-pickle)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _short(exc: BaseException) -> str:
    """The informative first line of an exception, at most ~120 characters."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    line = lines[0] if lines else type(exc).__name__
    if len(line) > 120:
        line = line[:117] + "..."
    return f"{type(exc).__name__}: {line}"


def corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is corrupt or not a checkpoint ({why}); check the file (a partial download?) "
        "or re-save it with torch.save(model.state_dict(), ...)"
    )


def _is_safetensors(path: Path, head: bytes, size: int) -> bool:
    if path.suffix == ".safetensors":
        return True
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n <= size - 8 and head[8:9] == b"{"


def _zip_names(path: Path) -> list[str] | None:
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _is_torchscript(names: list[str]) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _resolve_global(name: str):
    module, _, attr = name.rpartition(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), attr)


def _pickles_complete(path: Path, names: list[str] | None) -> bool:
    """True when the file's pickle stream(s) parse to STOP: the file is whole, merely code-needing.

    A truncated file can fail in the weights-only unpickler with a cut-off GLOBAL name; this tells
    "needs code" from "corrupt".
    """
    try:
        if names is not None:
            pkl = next(n for n in names if n.endswith("data.pkl"))
            with zipfile.ZipFile(path) as zf:
                streams = [io.BytesIO(zf.read(pkl))]
            for s in streams:
                for _ in pickletools.genops(s):
                    pass
            return True
        with open(path, "rb") as f:
            # legacy torch.save: magic number, protocol, sys info, the object, storage keys
            for _ in range(4):
                if not f.peek(1):
                    break  # complete pickles followed by end of file (a plain pickle)
                for _ in pickletools.genops(f):
                    pass
        return True
    except Exception:
        return False


def _torch_load_weights_only(path: Path, map_location) -> Any:
    """``torch.load(weights_only=True)``, also allowing the plain-data globals in ``_DATA_GLOBALS``."""
    allowed: list = []
    seen: set[str] = set()
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.serialization.safe_globals(allowed):
                    return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            name = _refused_global(exc)
            if name is None or name in seen or not (name in _DATA_GLOBALS or _NUMPY_DTYPE.fullmatch(name)):
                raise
            try:
                obj = _resolve_global(name)
            except Exception:
                raise exc from None
            seen.add(name)
            allowed.append((obj, name))


def _needs_code_error(path: Path, name: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} needs arbitrary code to unpickle (it references {name}; it may run code); "
        "re-run with --trust-pickle if you trust its source"
    )


def _load_pickle(path: Path, names: list[str] | None, *, trust_pickle: bool, map_location) -> tuple[Any, bool]:
    """Unpickle safely; returns (object, whether code-running unpickling was used)."""
    try:
        return _torch_load_weights_only(path, map_location), False
    except Exception as exc:
        name = _refused_global(exc)
        if name is None or not _pickles_complete(path, names):
            raise corrupt(path, _short(exc)) from None
        if not trust_pickle:
            raise _needs_code_error(path, name) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=False), True
    except (AttributeError, ImportError) as exc:
        raise CheckpointError(
            f"checkpoint {path} was pickled with classes that cannot be imported here ({_short(exc)}); "
            "put the module that defines them on PYTHONPATH, or save a state_dict instead"
        ) from None
    except Exception as exc:
        raise corrupt(path, _short(exc)) from None


def _read_safetensors(path: Path) -> RawCheckpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise corrupt(path, _short(exc)) from None
    if not sd:
        raise CheckpointError(f"checkpoint {path} is a safetensors file with no tensors; it holds no weights")
    return RawCheckpoint(path=path, format="safetensors", state_dict=sd, file_meta=meta)


def _read_torchscript(path: Path) -> RawCheckpoint:
    """The archive's tensors only: no code in it runs (see :mod:`ncprobe.checkpoint.script_tensors`)."""
    try:
        sd = read_script_tensors(path)
    except Exception as exc:  # a damaged archive, or one holding more than modules and tensors
        return RawCheckpoint(path=path, format="torchscript", state_dict={}, extras={"unreadable": _short(exc)})
    return RawCheckpoint(path=path, format="torchscript", state_dict=sd)


def load_script_module(path: Path, map_location="cpu"):
    """``torch.jit.load``: compiles and may run the archive's code. Only behind a trust flag."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location=map_location)
    except Exception as exc:
        raise corrupt(path, _short(exc)) from None


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        return f"a dict with keys {keys}{', ...' if len(obj) > 6 else ''} and no tensors"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _check_tensors(path: Path, sd: dict) -> None:
    """Weights must be dense real tensors: a sparse or complex one would be converted (or fail) deep
    inside loading, so it is refused here in one line."""
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.layout != torch.strided:
            raise CheckpointError(f"checkpoint {path}: tensor {key!r} is {value.layout}, not dense; save dense "
                                  "weights (tensor.to_dense()) in the state_dict")
        if value.is_complex():
            raise CheckpointError(f"checkpoint {path}: tensor {key!r} is complex ({value.dtype}); image classifiers "
                                  "have real weights: check the file")


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False, map_location="cpu") -> RawCheckpoint:
    """Read ``path`` into a :class:`RawCheckpoint` (state_dict and/or module, plus file metadata)."""
    raw = _read_checkpoint(path, trust_pickle=trust_pickle, map_location=map_location)
    _check_tensors(raw.path, raw.state_dict or {})
    return raw


def _read_checkpoint(path: str | Path, *, trust_pickle: bool = False, map_location="cpu") -> RawCheckpoint:
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path} ({_short(exc)}); check the path and permissions") from None
    if size == 0:
        raise corrupt(path, "the file is empty")

    names = _zip_names(path)
    if names is not None and _is_torchscript(names):
        return _read_torchscript(path)
    if names is None and _is_safetensors(path, head, size):
        return _read_safetensors(path)

    obj, unpickled_code = _load_pickle(path, names, trust_pickle=trust_pickle, map_location=map_location)
    fmt = "torch" if names is not None else "torch-legacy"
    found = find_state_dict(obj)
    module = find_module(obj) if unpickled_code else None
    if found is None and module is None:
        raise CheckpointError(
            f"checkpoint {path} holds {_describe(obj)}, not a state_dict or a model; "
            "save model.state_dict() (or a dict with it under 'state_dict')"
        )
    raw = RawCheckpoint(path=path, format=fmt, unpickled_code=unpickled_code)
    if module is not None:
        raw.module, raw.wrapper = module[0], module[1]
        raw.state_dict = dict(module[0].state_dict())
    else:
        raw.state_dict, raw.wrapper = found
    raw.extras = file_extras(obj, skip=raw.wrapper[:1])
    return raw
