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
import os
from pathlib import Path

from torch import nn

from .. import __version__
from ..errors import CheckpointError
from .nc_heads import ETF_MODES, check_mode, wrap_model
from .registry import create_model, get_arch

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


def build_model_from_meta(meta: dict) -> tuple[nn.Module, str, list[str]]:
    """(model, "classifier", probe_layers) for an ncprobe checkpoint's meta; weights uninitialized."""
    missing = [k for k in ("arch", "mode", "num_classes") if k not in meta]
    if missing:
        raise CheckpointError(f"ncprobe checkpoint metadata lacks {', '.join(missing)}; re-create the checkpoint")
    mode = meta["mode"]
    try:
        check_mode(mode)
    except Exception as exc:
        raise CheckpointError(f"ncprobe checkpoint has unknown mode {mode!r}; upgrade ncprobe or re-create it") from exc
    num_classes = int(meta["num_classes"])
    base, head_name, base_probe, defaults = create_base(str(meta["arch"]), num_classes)
    head_opts = dict(meta.get("head") or {})
    head_opts["input_size"] = tuple(meta.get("input_size") or defaults["input_size"])
    model = wrap_model(base, head_name, mode, num_classes, **head_opts)
    model.eval()
    return model, "classifier", probe_layers_for(base_probe, mode)
