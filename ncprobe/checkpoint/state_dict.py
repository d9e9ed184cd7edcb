"""Finding the state_dict inside whatever a training script saved, and normalizing its keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# Keys under which training scripts store the weights, most common first. EMA copies come last:
# when a file holds both, the raw weights are the ones the published accuracy refers to.
WRAPPER_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "network",
    "module",
    "model_state",
    "weights",
    "params",
    "state_dict_ema",
    "model_ema",
    "ema_state_dict",
    "ema",
)
# Prefixes added by DataParallel/DDP (module.), torch.compile (_orig_mod.) and Lightning-style
# wrappers (model.); stripped repeatedly while all (or nearly all) keys carry one.
PREFIXES = ("module.", "_orig_mod.", "model.")
MOST = 0.9  # "nearly all": this fraction of keys, the rest left as they are

SIMPLE = (bool, int, float, str)


def is_tensor_mapping(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def find_state_dict(obj: Any, _path: tuple = ()) -> tuple[dict[str, torch.Tensor], tuple[str, ...]] | None:
    """Return ``(state_dict, path of wrapper keys)`` for the weights inside ``obj``, or None.

    ``obj`` may be a state_dict, a dict wrapping one under a known key (nested any depth), or a
    mapping with mostly tensors and a few scalars (the scalars are dropped).
    """
    if is_tensor_mapping(obj):
        return dict(obj), _path
    if not isinstance(obj, Mapping):
        return None
    for key in WRAPPER_KEYS:
        if key in obj:
            found = find_state_dict(obj[key], _path + (key,))
            if found is not None:
                return found
    best = None
    for key, value in obj.items():
        if isinstance(value, Mapping) and isinstance(key, str):
            found = find_state_dict(value, _path + (key,))
            if found is not None and (best is None or len(found[0]) > len(best[0])):
                best = found
    if best is not None:
        return best
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(tensors) >= 2 and sum("." in k for k in tensors) >= len(tensors) // 2:
        return tensors, _path
    return None


def find_module(obj: Any) -> tuple[nn.Module, tuple[str, ...]] | None:
    """A full nn.Module pickled as the object or under one of the wrapper keys."""
    if isinstance(obj, nn.Module):
        return obj, ()
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), nn.Module):
                return obj[key], (key,)
    return None


def file_extras(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scalar top-level entries saved next to the weights (epoch, best accuracy, arch, ...)."""
    if not isinstance(obj, Mapping) or is_tensor_mapping(obj):
        return {}
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str) or key in skip:
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, SIMPLE):
            out[key] = value
    return out


def strip_prefix_variants(sd: dict[str, torch.Tensor]) -> list[tuple[tuple[str, ...], dict[str, torch.Tensor]]]:
    """Key variants of ``sd``, most stripped first: ``[(stripped prefixes, state_dict), ...]``.

    A prefix is stripped while all keys, or at least 90% of them, carry it (and stripping makes
    no two keys collide). The unstripped original is always the last variant, so a model whose
    own top-level module is called ``model`` still matches.
    """
    variants = [((), sd)]
    current, stripped = sd, ()
    while True:
        for prefix in PREFIXES:
            n = sum(k.startswith(prefix) for k in current)
            if n == 0 or n < MOST * len(current):
                continue
            renamed = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in current.items()}
            if len(renamed) != len(current):
                continue
            current, stripped = renamed, stripped + (prefix,)
            variants.append((stripped, current))
            break
        else:
            break
    return variants[::-1]


def apply_aliases(sd: dict[str, torch.Tensor], aliases: Mapping[str, str]) -> dict[str, torch.Tensor] | None:
    """Rename key prefixes (``{"fc.": "linear."}``); None when no alias applies."""
    usable = {old: new for old, new in aliases.items() if not any(k.startswith(new) for k in sd)}
    out, changed = {}, False
    for key, value in sd.items():
        for old, new in usable.items():
            if key.startswith(old):
                key, changed = new + key[len(old) :], True
                break
        out[key] = value
    return out if changed else None


# Keys that carry no weights and may be present or absent: BatchNorm's batch counter (old files lack
# it) and the per-module op/parameter counters that the `thop` profiler leaves in state_dicts.
PROFILER_SUFFIXES = ("total_ops", "total_params")
IGNORED_SUFFIXES = ("num_batches_tracked", *PROFILER_SUFFIXES)


def is_bn_counter(key: str) -> bool:
    """A key to ignore when matching (see ``IGNORED_SUFFIXES``)."""
    return key.endswith(IGNORED_SUFFIXES)


def shapes_of(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items() if not is_bn_counter(k)}
