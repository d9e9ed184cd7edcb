"""The tensors of a TorchScript archive, read without running any of its code.

``torch.jit.load`` compiles the archive's ``code/`` and may run it (a scripted ``__setstate__`` runs
at load, the scripted ``forward`` at every call: scripted code can read and write files). This
reader only unpickles ``data.pkl`` with an allow-list: ``__torch__.*`` module objects become inert
attribute holders, tensors are rebuilt from the archive's ``data/`` records, and any other global is
refused. Walking the module tree gives the state_dict (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...),
which ncprobe then loads into an eager architecture it knows.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

# torch.jit._pickle's list builders are plain constructors of lists
_JIT_PICKLE = {"build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag"}


class ScriptObject:
    """An inert stand-in for one scripted object: its pickled attributes, nothing callable."""

    def __init__(self, qualname: str):
        self.qualname = qualname
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"__state__": state}


def _script_class(qualname: str):
    class _Bound(ScriptObject):
        def __new__(cls, *args, **kwargs):
            obj = object.__new__(ScriptObject)
            obj.qualname = qualname
            obj.state = {}
            return obj

    return _Bound


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return _script_class(f"{module}.{name}")
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
            return getattr(torch._utils, name)
        if module == "torch" and name.endswith("Storage") and hasattr(torch, name):
            return getattr(torch, name)
        if module == "torch.jit._pickle" and name in _JIT_PICKLE:
            import torch.jit._pickle as jp

            return getattr(jp, name)
        if (module, name) in (("collections", "OrderedDict"), ("torch", "device"), ("torch", "Size")):
            return {"OrderedDict": OrderedDict, "device": torch.device, "Size": torch.Size}[name]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a TorchScript archive read as data")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        dtype = storage_type.dtype if hasattr(storage_type, "dtype") else storage_type
        raw = self._archive.read(f"{self._prefix}data/{key}")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _walk(obj, prefix: str, out: dict, seen: set) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for key, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
        elif isinstance(value, ScriptObject):
            _walk(value, f"{prefix}{key}.", out, seen)


def read_script_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """``{dotted name: tensor}`` of every parameter and buffer of the scripted module in ``path``.

    Raises ``pickle.UnpicklingError`` / ``zipfile.BadZipFile`` / ``KeyError`` for an archive that
    holds anything but module objects and tensors, or is damaged.
    """
    with zipfile.ZipFile(path) as archive:
        data_pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = data_pkl[: -len("data.pkl")]
        with archive.open(data_pkl) as fh:
            root = _Unpickler(fh, archive, prefix).load()
    if not isinstance(root, ScriptObject):
        raise pickle.UnpicklingError(f"the archive's data.pkl holds a {type(root).__name__}, not a module")
    out: dict[str, torch.Tensor] = {}
    _walk(root, "", out, set())
    return out
