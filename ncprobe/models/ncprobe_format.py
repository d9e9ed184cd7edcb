"""ncprobe checkpoints: a .safetensors state_dict whose metadata says how to rebuild the model.

File metadata: ``{"format": "ncprobe", "ncprobe": json.dumps(meta)}`` with meta keys ``arch`` (a
registry name, ``timm:NAME`` or ``file.py:Class``), ``mode``, ``num_classes``, ``input_size`` (C,H,W), ``mean``,
``std``, ``head`` (head options, e.g. ``projector_dim``), ``config`` (the training arguments),
``history`` (one dict per epoch) and ``ncprobe_version``. :func:`build_model_from_meta` rebuilds the
(uninitialized) model; ``ncprobe.checkpoint.load_checkpoint`` then loads the weights strictly.
The module sits with the models because the format is a description of a network, not a way of
reading arbitrary files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from torch import nn

from .. import __version__
from ..errors import CheckpointError
from .nc_heads import ETF_MODES, check_mode, wrap_model
from .registry import create_model, get_arch
from .spec import MAX_CLASSES, MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, max_parameters

FORMAT = "ncprobe"
META_KEYS = ("arch", "mode", "num_classes", "input_size", "mean", "std", "head", "config", "history",
             "ncprobe_version")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def save_checkpoint(path, model: nn.Module, meta: dict) -> Path:
    """Write ``model.state_dict()`` (contiguous CPU copies) and ``meta`` to ``path`` (.safetensors).

    The file is written to a temporary name and renamed, so an interrupted save never leaves a
    truncated checkpoint behind.
    """
    from safetensors.torch import save_file

    path = Path(path)
    meta = dict(meta)
    meta.setdefault("ncprobe_version", __version__)
    missing = [k for k in ("arch", "mode", "num_classes") if k not in meta]
    if missing:
        raise ValueError(f"save_checkpoint: meta lacks {missing}")
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, FORMAT: json.dumps(_jsonable(meta))})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600: colleagues sharing the folder could not read it
    os.replace(tmp, path)
    return path


def read_meta(path) -> dict:
    """The meta dict of an ncprobe checkpoint; CheckpointError if the file is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{str(path)!r} is not a readable .safetensors file ({exc}); re-save it") from exc
    if md.get("format") != FORMAT or FORMAT not in md:
        raise CheckpointError(f"{str(path)!r} is a .safetensors file without ncprobe metadata; "
                              "pass --arch to load it as a plain state_dict")
    try:
        return json.loads(md[FORMAT])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(path)!r} has corrupt ncprobe metadata ({exc}); re-create the checkpoint") from exc


def create_base(arch: str, num_classes: int) -> tuple[nn.Module, str, list[str], dict]:
    """Build an (untrained) base network by name through the ncprobe architecture registry.

    ``arch`` is a registered name (``cifar_resnet20``, ``small_cnn``, a pattern such as ``wrn16_4``),
    ``timm:NAME`` (``timm.create_model(NAME, pretrained=False, num_classes=...)``, head from its
    ``get_classifier()``) or ``file.py:Class`` / ``pkg.module:Class``. Returns (model, head_name,
    probe_layers, defaults) where defaults holds the architecture's ``input_size``, ``mean``, ``std``.
    """
    spec = get_arch(arch)
    model = create_model(arch, num_classes=int(num_classes))
    defaults = {"input_size": tuple(spec.input_size), "mean": tuple(spec.mean), "std": tuple(spec.std)}
    return model, spec.head, list(spec.probe_layers), defaults


def probe_layers_for(base_probe_layers, mode: str) -> list[str]:
    """Probe points of an NCModel: the base's layers under ``encoder.``, then encoder (+ projector)."""
    layers = [f"encoder.{p}" for p in base_probe_layers] + ["encoder"]
    if mode in ETF_MODES:
        layers.append("projector")
    return layers


_HEAD_OPTIONS = {"projector_dim": (int, 1, 65_536), "l2_scale": (float, None, None), "learn_scale": (bool, None, None)}


def _bad(what: str) -> CheckpointError:
    return CheckpointError(f"ncprobe checkpoint metadata: {what}; the file is damaged or was not written by ncprobe")


def check_meta(meta: dict) -> dict:
    """Validate every value an ncprobe checkpoint's metadata asks ncprobe to build from (types and
    ranges), before anything is allocated: a file must not make ncprobe build terabytes, import code
    or contact a network. Returns the checked values."""
    if not isinstance(meta, dict):
        raise _bad("it is not a JSON object")
    missing = [k for k in ("arch", "mode", "num_classes") if k not in meta]
    if missing:
        raise CheckpointError(f"ncprobe checkpoint metadata lacks {', '.join(missing)}; re-create the checkpoint")
    arch, mode, n = meta["arch"], meta["mode"], meta["num_classes"]
    if not isinstance(arch, str) or not arch or len(arch) > 300:
        raise _bad(f"arch must be a name, got {arch!r}")
    if arch.startswith("timm:") and any(c in arch[len("timm:"):] for c in ":/\\"):
        raise _bad(f"arch {arch!r} names a hub repository; a file never makes ncprobe download code or weights")
    if not isinstance(mode, str):
        raise _bad(f"mode must be a string, got {mode!r}")
    try:
        check_mode(mode)
    except Exception as exc:
        raise CheckpointError(f"ncprobe checkpoint has unknown mode {mode!r}; upgrade ncprobe or re-create it") from exc
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CLASSES:
        raise _bad(f"num_classes must be an integer in 1..{MAX_CLASSES}, got {n!r}")
    size = meta.get("input_size")
    if size is not None:
        ok = isinstance(size, (list, tuple)) and len(size) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in size)
        if not ok or not (1 <= size[0] <= MAX_INPUT_CHANNELS and all(1 <= v <= MAX_INPUT_SIDE for v in size[1:])):
            raise _bad(f"input_size must be [C, H, W] with C <= {MAX_INPUT_CHANNELS} and sides <= {MAX_INPUT_SIDE}, "
                       f"got {size!r}")
    for key in ("mean", "std"):
        values = meta.get(key)
        if values is None:
            continue
        if not (isinstance(values, (list, tuple)) and 1 <= len(values) <= MAX_INPUT_CHANNELS
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            raise _bad(f"{key} must be a list of finite numbers, got {values!r}")
        if key == "std" and min(values) <= 0:
            raise _bad(f"std must be positive, got {values!r}")
    head = meta.get("head") or {}
    if not isinstance(head, dict):
        raise _bad(f"head must be an object, got {head!r}")
    for key, value in head.items():
        if key not in _HEAD_OPTIONS:
            raise _bad(f"unknown head option {key!r}")
        kind, lo, hi = _HEAD_OPTIONS[key]
        if value is None and kind is float:
            continue
        if kind is bool and not isinstance(value, bool):
            raise _bad(f"head option {key} must be true or false, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            raise _bad(f"head option {key} must be an integer in {lo}..{hi}, got {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise _bad(f"head option {key} must be a finite number, got {value!r}")
    return meta


def check_size(arch: str, num_classes: int) -> None:
    """Count the parameters of ``arch`` on the meta device (no memory) and refuse above the budget."""
    from .introspect import build_on_meta

    spec = get_arch(arch)
    model = build_on_meta(spec.builder, num_classes=num_classes)
    count = sum(p.numel() for p in model.parameters())
    limit = max_parameters()
    if count > limit:
        raise CheckpointError(
            f"architecture {arch} with {num_classes} classes has {count:,} parameters, above the limit of "
            f"{limit:,}; the file is damaged or hostile (raise NCPROBE_MAX_PARAMS if it is really that large)"
        )


def build_model_from_meta(meta: dict) -> tuple[nn.Module, str, list[str]]:
    """(model, "classifier", probe_layers) for an ncprobe checkpoint's meta; weights uninitialized."""
    check_meta(meta)
    mode = meta["mode"]
    num_classes = int(meta["num_classes"])
    check_size(str(meta["arch"]), num_classes)
    base, head_name, base_probe, defaults = create_base(str(meta["arch"]), num_classes)
    head_opts = dict(meta.get("head") or {})
    head_opts["input_size"] = tuple(meta.get("input_size") or defaults["input_size"])
    model = wrap_model(base, head_name, mode, num_classes, **head_opts)
    model.eval()
    return model, "classifier", probe_layers_for(base_probe, mode)
