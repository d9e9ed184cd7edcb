"""What ``ncprobe inspect`` shows: the facts of a loaded checkpoint and the shapes of its probe points."""

from __future__ import annotations

from typing import Any

import torch

from .loaded import LoadedCheckpoint, input_size_error


def _shape(out: Any) -> tuple[int, ...] | None:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape[1:])
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return tuple(out[0].shape[1:])
    return None


def layer_shapes(ckpt: LoadedCheckpoint) -> dict[str, tuple[int, ...] | None]:
    """Per-sample output shape of each probe layer, of 'penultimate' (the head's input) and of
    'logits', from one forward pass of a zero image of ``ckpt.input_size``."""
    model = ckpt.model
    shapes: dict[str, tuple[int, ...] | None] = {name: None for name in ckpt.probe_layers}
    shapes["penultimate"] = None
    modules = dict(model.named_modules())
    hooks = []
    try:
        for name in ckpt.probe_layers:
            if name in modules:
                hooks.append(modules[name].register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, _shape(o))))
        if ckpt.head_name in modules:
            hooks.append(
                modules[ckpt.head_name].register_forward_pre_hook(lambda m, i: shapes.__setitem__("penultimate", _shape(i)))
            )
    except RuntimeError:  # TorchScript modules take no hooks
        pass
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.zeros(1, *ckpt.input_size, device=device)
        with torch.no_grad():
            try:
                shapes["logits"] = _shape(model(x))
            except Exception as exc:
                err = input_size_error(ckpt, exc)
                if err is None:
                    raise
                raise err from None
    finally:
        for h in hooks:
            h.remove()
    return shapes


def describe(ckpt: LoadedCheckpoint, *, shapes: bool = True) -> dict[str, Any]:
    """A JSON-able summary of ``ckpt``: facts, their origins, file details and probe points."""
    head = ckpt.head
    head_desc = type(head).__name__
    if hasattr(head, "in_features") and hasattr(head, "out_features"):
        head_desc = f"{head_desc} {head.in_features} -> {head.out_features}"
    md = ckpt.metadata
    info: dict[str, Any] = {
        "source": ckpt.source,
        "name": ckpt.name,
        "arch": ckpt.arch,
        "parameters": ckpt.num_parameters(),
        "num_classes": ckpt.num_classes,
        "input_size": list(ckpt.input_size),
        "mean": list(ckpt.mean),
        "std": list(ckpt.std),
        "preprocessing": ckpt.preprocessing.describe(),
        "head": ckpt.head_name,
        "head_module": head_desc,
        "sha256": ckpt.sha256,
        "probe_layers": list(ckpt.probe_layers) + ["penultimate", "logits"],
        "origin": dict(ckpt.origin),
        "format": md.get("format"),
        "wrapper": md.get("wrapper") or [],
        "stripped_prefixes": md.get("stripped_prefixes") or [],
        "published_top1": md.get("published_top1"),
        "dataset": (md.get("registry") or {}).get("dataset"),
        "note": md.get("note"),
        "file_extras": md.get("file_extras") or {},
        "training": _training(ckpt.recipe),
    }
    if shapes:
        info["shapes"] = {k: (list(v) if v is not None else None) for k, v in layer_shapes(ckpt).items()}
    return info


def _training(meta) -> dict | None:
    """For ncprobe's own checkpoints: the NC-control recipe and how far training went."""
    if not meta:
        return None
    history = meta.get("history") or []
    config = meta.get("config") or {}
    last = history[-1] if history else {}
    return {"mode": meta.get("mode"), "epochs": len(history), "data": config.get("data"),
            "train_acc": last.get("train_acc"), "val_acc": last.get("val_acc")}
