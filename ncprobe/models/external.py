"""Architectures from outside the registry: ``timm:NAME`` and user classes (``file.py:Class``,
``pkg.module:Class``), described with the generic heuristics of :mod:`ncprobe.models.introspect`."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import sys
import warnings
from functools import partial
from pathlib import Path

from torch import nn

from ..errors import CheckpointError
from .introspect import (
    build_on_meta,
    find_head,
    guess_input_size,
    module_name,
    probe_layers_for_model,
)
from .spec import IMAGENET_MEAN, IMAGENET_STD, ArchSpec

# ---------------------------------------------------------------- timm


def _timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        raise CheckpointError("timm:NAME architectures need the timm package; pip install timm") from None
    return timm


def timm_create(model_name: str, num_classes: int | None = None, pretrained: bool = False) -> nn.Module:
    timm = _timm()
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise CheckpointError(
                f"timm has no model {model_name!r} ({exc}); see timm.list_models() for the names"
            ) from None
        raise


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_quiet(offline: bool):
    """huggingface_hub in offline mode (local cache only) and without its multi-line retry logs."""
    import logging

    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "huggingface_hub.utils._http", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # pragma: no cover - timm depends on it
        hub_constants = None
    was = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None and offline:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = was
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def timm_pretrained(model_name: str, num_classes: int | None = None) -> nn.Module:
    """A timm model with its pretrained weights: from the local Hugging Face cache when they are
    there, else downloaded; with no network, a one-line CheckpointError within seconds (no retries)."""
    arch = f"timm:{model_name}"
    hint = f"pass a local weights file: ncprobe ... weights.pth --arch {arch}"
    try:
        with _hub_quiet(offline=True):
            return timm_create(model_name, num_classes=num_classes, pretrained=True)
    except CheckpointError:
        raise
    except Exception:
        pass  # not in the local cache
    if not _hub_reachable():
        raise CheckpointError(
            f"the pretrained weights of {arch} are not in the local Hugging Face cache and the hub cannot be "
            f"reached (no network); {hint}"
        )
    try:
        with _hub_quiet(offline=False):
            return timm_create(model_name, num_classes=num_classes, pretrained=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"could not get the pretrained weights of {arch} ({_short(exc)}); {hint}") from None


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def timm_probe_layers(model: nn.Module, head: str | None) -> list[str]:
    """Module names from ``model.feature_info`` (timm's own feature points), else the heuristic."""
    info = getattr(model, "feature_info", None)
    names = []
    if info is not None:
        dicts = info.get_dicts() if hasattr(info, "get_dicts") else info
        try:
            names = [d["module"] for d in dicts if isinstance(d, dict) and d.get("module")]
        except TypeError:
            names = []
    modules = dict(model.named_modules())
    names = [n for n in names if n in modules and n != head]
    if len(names) >= 3:
        return names
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    auto = probe_layers_for_model(model, head, tuple(cfg.get("input_size") or (3, 224, 224)))
    return names if len(names) >= len(auto) else auto


#: timm's defaults when a pretrained_cfg leaves them out (timm.data.constants)
TIMM_DEFAULT_CROP_PCT = 0.875


def timm_eval_config(cfg: dict) -> dict | None:
    """The evaluation transform a timm ``pretrained_cfg`` describes, as timm's
    ``resolve_data_config`` + ``transforms_imagenet_eval`` read it: crop (H, W) = ``input_size``,
    ``crop_pct`` (default 0.875), ``interpolation`` (default bilinear), ``crop_mode`` (default
    center) and, in the border mode, ``mean`` as the padding colour. None without an ``input_size``."""
    size = cfg.get("input_size")
    if not isinstance(size, (tuple, list)) or len(size) != 3:
        return None
    mean = tuple(cfg.get("mean") or IMAGENET_MEAN)
    tag = cfg.get("hf_hub_id") or cfg.get("architecture") or ""
    return {
        "crop": (int(size[1]), int(size[2])),
        "crop_pct": float(cfg.get("crop_pct") or TIMM_DEFAULT_CROP_PCT),
        "interpolation": str(cfg.get("interpolation") or "bilinear"),
        "crop_mode": str(cfg.get("crop_mode") or "center"),
        "fill": tuple(round(255 * v) for v in mean) if cfg.get("crop_mode") == "border" else (0, 0, 0),
        "config": f"timm pretrained_cfg {tag}".strip(),
    }


def timm_spec(model_name: str) -> ArchSpec:
    model = build_on_meta(timm_create, model_name=model_name)
    head = module_name(model, model.get_classifier()) or find_head(model)
    if head is None:
        raise CheckpointError(f"timm model {model_name!r} has no classifier module; ncprobe needs one")
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return ArchSpec(
        name=f"timm:{model_name}",
        builder=partial(timm_create, model_name),
        head=head,
        probe_layers=tuple(timm_probe_layers(model, head)),
        input_size=tuple(cfg.get("input_size") or (3, 224, 224)),
        mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
        std=tuple(cfg.get("std") or IMAGENET_STD),
        family="timm",
        description=f"timm model {model_name}",
        default_num_classes=int(getattr(model, "num_classes", 0) or cfg.get("num_classes") or 1000),
        extra={"pretrained_cfg": {k: v for k, v in cfg.items() if isinstance(v, (str, int, float, tuple, list))}},
    )


# ---------------------------------------------------------------- user classes


def _import_file(file: Path):
    if not file.is_file():
        raise CheckpointError(f"architecture file {file} not found; give --arch path/to/model.py:ClassName")
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]
    mod_name = f"ncprobe_user_{file.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    parent = str(file.resolve().parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)  # so the file's own sibling imports work
    spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise CheckpointError(f"could not import architecture file {file} ({type(exc).__name__}: {exc}); fix the file") from None
    return module


def _resolve_user_object(name: str):
    target, _, attr = name.rpartition(":")
    if not target or not attr:
        raise CheckpointError(f"architecture {name!r} is not path/to/file.py:ClassName or pkg.module:ClassName")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise CheckpointError(f"could not import module {target!r} for --arch {name} ({type(exc).__name__}: {exc})") from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise CheckpointError(f"{target} has no {attr!r}; check the class name in --arch {name}")
    if not callable(obj):
        raise CheckpointError(f"{name} is not a class or function; --arch needs something that builds an nn.Module")
    return obj


def _accepts_num_classes(obj) -> bool:
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return "num_classes" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _user_build(obj, accepts: bool, num_classes: int | None = None) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = obj(num_classes=num_classes) if (accepts and num_classes is not None) else obj()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"could not instantiate {getattr(obj, '__qualname__', obj)} ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{getattr(obj, '__qualname__', obj)}() returned {type(model).__name__}, not an nn.Module")
    return model


def user_class_spec(name: str) -> ArchSpec:
    obj = _resolve_user_object(name)
    accepts = _accepts_num_classes(obj)
    try:
        model = build_on_meta(_user_build, obj=obj, accepts=accepts)
    except CheckpointError:
        if not accepts:
            raise
        model = build_on_meta(_user_build, obj=obj, accepts=accepts, num_classes=10)
    head = find_head(model)
    if head is None:
        raise CheckpointError(f"{name} has no nn.Linear classifier; ncprobe needs one to find the penultimate layer")
    return ArchSpec(
        name=name,
        builder=partial(_user_build, obj, accepts),
        head=head,
        probe_layers=tuple(probe_layers_for_model(model, head, guess_input_size(model))),
        input_size=guess_input_size(model),
        family="user",
        description=f"user class {name}",
        default_num_classes=model.get_submodule(head).out_features,
        extra={"accepts_num_classes": accepts, "heuristic": True},
    )


def external_spec(name: str) -> ArchSpec:
    if name.startswith("timm:"):
        return timm_spec(name[len("timm:") :])
    return user_class_spec(name)
