"""``load_checkpoint``: a file, a registry name or ``timm:NAME`` -> :class:`LoadedCheckpoint`.

Every fact (architecture, classes, input size, mean, std, head, probe layers) records where it
came from. Precedence: ``flag`` (the caller said so) > ``file`` (metadata stored in the checkpoint)
> ``registry`` (checkpoints.yaml, matched by sha256 or name) > ``model-config`` (the pretrained
configuration of a timm or torchvision architecture) > ``inferred`` (from the state_dict's keys and
shapes) > ``default`` (the architecture's defaults).

The preprocessing of image files (resize, interpolation, centre crop; ``origin["preprocessing"]``)
comes from timm's ``pretrained_cfg`` (``timm:NAME``) or from torchvision's published weights
(``tv:NAME``: those whose file hash matches the checkpoint's sha256, else the first release with
the architecture's input size), origin ``model-config``; otherwise ncprobe's default.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.transforms import Preprocessing
from ..errors import CheckpointError
from ..models.external import timm_eval_config, timm_pretrained
from ..models.families.torchvision_models import tv_eval_config
from ..models.introspect import find_head, guess_input_size, probe_layers_for_model
from ..models.ncprobe_format import build_model_from_meta, check_meta
from ..models.registry import builtin_arch, get_arch, list_archs
from ..models.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_CLASSES,
    MAX_INPUT_CHANNELS,
    MAX_INPUT_SIDE,
    ArchSpec,
)
from . import catalog
from .files import RawCheckpoint, _short, load_script_module, read_checkpoint, sha256_file
from .infer import Match, best_match, infer_arch
from .loaded import LoadedCheckpoint, submodule
from .scripted import eager_from_scripted
from .state_dict import PROFILER_SUFFIXES, is_bn_counter

RANK = {"flag": 6, "file": 5, "registry": 4, "model-config": 3, "inferred": 2, "default": 1}
_WHO = {"flag": "--arch", "file": "the file's metadata", "registry": "the checkpoint registry"}


class _Facts:
    """Values with their origin; a value only replaces one of lower precedence."""

    def __init__(self) -> None:
        self.value: dict[str, Any] = {}
        self.origin: dict[str, str] = {}

    def set(self, key: str, value: Any, origin: str) -> None:
        if value is None:
            return
        if key in self.origin and RANK[self.origin[key]] >= RANK[origin]:
            return
        self.value[key] = value
        self.origin[key] = origin

    def get(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default)


# ---------------------------------------------------------------- flag parsing


def parse_floats(value: Any, what: str) -> tuple[float, ...] | None:
    """'0.5,0.5,0.5' / [0.5, 0.5, 0.5] / 0.5 -> a tuple of floats."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value.strip().strip("()[]")) if v]
    elif isinstance(value, (int, float)):
        value = [value]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{what} must be numbers such as 0.485,0.456,0.406, got {value!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise CheckpointError(f"{what} must be finite numbers such as 0.485,0.456,0.406, got {value!r}")
    if not out:
        raise CheckpointError(f"{what} is empty; give one number per input channel, e.g. 0.485,0.456,0.406")
    return out


def parse_input_size(value: Any) -> tuple[int, int, int] | None:
    """'3,32,32' / '3x32x32' / '32' / 32 / (32, 32) / (3, 32, 32) -> (C, H, W)."""
    if value is None:
        return None
    raw = value
    if isinstance(value, str):
        value = [v for v in re.split(r"[,x\s]+", value.strip().strip("()[]")) if v]
    elif isinstance(value, int):
        value = [value]
    try:
        dims = [int(v) for v in value]
    except (TypeError, ValueError):
        raise CheckpointError(f"input size must be C,H,W or H,W or one side such as 32, got {raw!r}") from None
    if len(dims) == 1:
        dims = [3, dims[0], dims[0]]
    elif len(dims) == 2:
        dims = [3, *dims]
    if len(dims) != 3 or min(dims) < 1:
        raise CheckpointError(f"input size must be C,H,W or H,W or one side such as 32, got {raw!r}")
    if dims[0] > MAX_INPUT_CHANNELS or max(dims[1:]) > MAX_INPUT_SIDE:
        raise CheckpointError(
            f"input size {raw!r} is too large (at most {MAX_INPUT_CHANNELS} channels and {MAX_INPUT_SIDE} pixels a "
            "side); pass the model's real input size, e.g. 3,224,224"
        )
    return tuple(dims)


# ---------------------------------------------------------------- helpers


def _registry_facts(facts: _Facts, entry: dict) -> None:
    for key in ("arch", "num_classes", "input_size", "mean", "std"):
        value = entry.get(key)
        if key == "input_size":
            value = parse_input_size(value)
        elif key in ("mean", "std"):
            value = parse_floats(value, key)
        facts.set(key, value, "registry")


def _known_arch_name(name: Any) -> bool:
    """A registered or pattern architecture. Never a timm: or file:Class name read from a file:
    importing code named by a checkpoint would run it."""
    if not isinstance(name, str):
        return False
    if ":" in name:
        return builtin_arch(name) is not None  # e.g. tv:resnet18: defined by ncprobe itself
    try:
        get_arch(name)
    except CheckpointError:
        return False
    return True


def _file_facts(facts: _Facts, raw: RawCheckpoint) -> dict | None:
    """Facts stored in the file; returns the ncprobe metadata dict for ncprobe's own checkpoints."""
    md = raw.file_meta
    if md.get("format") == "ncprobe" and "ncprobe" in md:
        try:
            meta = json.loads(md["ncprobe"])
            assert isinstance(meta, dict)
        except (ValueError, AssertionError):
            raise CheckpointError(f"checkpoint {raw.path} has unreadable ncprobe metadata; the file is damaged") from None
        check_meta(meta)
        facts.set("arch", meta.get("arch"), "file")
        facts.set("num_classes", meta.get("num_classes"), "file")
        facts.set("input_size", parse_input_size(meta.get("input_size")), "file")
        facts.set("mean", parse_floats(meta.get("mean"), "mean"), "file")
        facts.set("std", parse_floats(meta.get("std"), "std"), "file")
        return meta
    for source in (md, raw.extras):
        if _known_arch_name(source.get("arch")):
            facts.set("arch", source["arch"], "file")
        n = source.get("num_classes")
        if (isinstance(n, int) and not isinstance(n, bool)) or (isinstance(n, str) and n.isdigit() and len(n) < 10):
            if 1 <= int(n) <= MAX_CLASSES:  # anything else is not a class count: inferred from the head
                facts.set("num_classes", int(n), "file")
    return None


def _hint(sd: dict) -> str:
    if any(k.endswith(("weight_orig", "weight_u", "weight_v", "weight_sigma")) for k in sd):
        return " (its keys show spectral normalization, which ncprobe does not unpack)"
    return ""


def _class_mismatch(m: Match, spec_head: str) -> tuple[int, tuple] | None:
    """(classes in the file, head weight shape) when the only difference is the class count."""
    if m.missing or m.unexpected or not m.mismatched:
        return None
    if all(k.startswith(spec_head + ".") for k, _, _ in m.mismatched):
        k, got, _ = m.mismatched[0]
        return got[0], got
    return None


def _mismatch_error(path: Path, spec: ArchSpec, facts: _Facts, m: Match, sd: dict) -> CheckpointError:
    origin = facts.origin.get("arch", "flag")
    cls = _class_mismatch(m, spec.head)
    if cls is not None and facts.origin.get("num_classes") in ("flag", "file", "registry"):
        who = "--num-classes" if facts.origin["num_classes"] == "flag" else _WHO[facts.origin["num_classes"]]
        return CheckpointError(
            f"checkpoint {path} has {cls[0]} classes ({spec.head}.weight {cls[1]}) but {who} says "
            f"{facts.get('num_classes')}; drop --num-classes or fix it"
        )
    inf = infer_arch(sd)
    fits = inf.match is not None and inf.match.arch != spec.name
    if origin == "flag":
        hint = (
            f"the file fits {inf.match.arch}: pass --arch {inf.match.arch} or drop --arch"
            if fits
            else "drop --arch to let ncprobe infer the architecture, or pass the right one"
        )
    else:
        hint = f"the file fits {inf.match.arch}: pass --arch {inf.match.arch}" if fits else "pass --arch NAME to override it"
    return CheckpointError(
        f"checkpoint {path} does not fit architecture {spec.name} (from {_WHO.get(origin, origin)}): "
        f"{m.describe()}{_hint(sd)}; {hint}"
    )


def _no_match_error(path: Path, sd: dict, closest: list[Match]) -> CheckpointError:
    if closest:
        near = "closest: " + "; ".join(f"{m.arch} ({m.describe()})" for m in closest)
    else:
        first = ", ".join(repr(k) for k in list(sd)[:3])
        near = f"no registered architecture shares its key names ({first}, ...)"
    return CheckpointError(
        f"checkpoint {path} matches no known architecture ({len(sd)} tensors){_hint(sd)}; {near}; "
        f"pass --arch NAME (a registered architecture, e.g. {_family_examples()}; `python -c \"import "
        f"ncprobe.models as m; print(m.list_archs())\"` lists all), --arch timm:NAME or --arch path/to/model.py:Class"
    )


def _family_examples() -> str:
    """The first registered member of each family: a readable sample of the ~130 names."""
    seen: dict[str, str] = {}
    for name in list_archs(registration_order=True):
        seen.setdefault(get_arch(name).family or name, name)
    return ", ".join(seen.values())


def _instantiate(spec: ArchSpec, m: Match) -> nn.Module:
    model = spec.builder(num_classes=m.num_classes or spec.default_num_classes)
    weights = {k: v for k, v in m.state_dict.items() if not k.endswith(PROFILER_SUFFIXES)}
    result = model.load_state_dict(weights, strict=False)
    bad = [k for k in result.missing_keys if not is_bn_counter(k)] + list(result.unexpected_keys)
    if bad:  # cannot happen after an exact signature match; kept as a guard
        raise CheckpointError(f"weights do not load into {spec.name}: {len(bad)} keys differ (e.g. {bad[0]!r})")
    return model


def _finish_device(model: nn.Module, map_location) -> nn.Module:
    if isinstance(map_location, (str, torch.device)):
        try:
            device = torch.device(map_location)
        except RuntimeError:
            raise CheckpointError(f"map_location {map_location!r} is not a device; use cpu, cuda or cuda:N") from None
        if device.type != "cpu":
            model = model.to(device)
    return model


# ---------------------------------------------------------------- sources


def _from_timm_pretrained(model_name: str, source: str, facts: _Facts, entry: dict | None, map_location) -> LoadedCheckpoint:
    arch = f"timm:{model_name}"
    if facts.origin.get("arch") == "flag" and facts.get("arch") != arch:
        raise CheckpointError(f"--arch {facts.get('arch')} conflicts with the source {source}; drop --arch")
    facts.set("arch", arch, "flag")
    model = timm_pretrained(model_name, num_classes=facts.get("num_classes"))
    spec = get_arch(arch)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    facts.set("num_classes", int(model.num_classes), "file")
    facts.set("input_size", parse_input_size(cfg.get("input_size")), "file")
    facts.set("mean", parse_floats(cfg.get("mean"), "mean"), "file")
    facts.set("std", parse_floats(cfg.get("std"), "std"), "file")
    meta: dict[str, Any] = {"format": "timm-pretrained", "pretrained_cfg": spec.extra.get("pretrained_cfg", {})}
    facts.set("preprocessing", preprocessing_from_config(timm_eval_config(cfg)), "model-config")
    if entry is not None:
        _registry_facts(facts, entry)
        meta["registry"] = dict(entry)
        meta["published_top1"] = entry.get("top1")
    facts.set("head", spec.head, "default")
    facts.set("probe_layers", list(spec.probe_layers), "default")
    facts.set("name", entry["name"] if entry else model_name, "registry" if entry else "default")
    return _result(model, facts, sha256="", source=source, metadata=meta, map_location=map_location)


def _result(model: nn.Module, facts: _Facts, *, sha256: str, source: str, metadata: dict, map_location) -> LoadedCheckpoint:
    input_size = facts.get("input_size") or (3, 32, 32)
    facts.set("input_size", input_size, "default")
    channels = input_size[0]
    facts.set("mean", IMAGENET_MEAN if channels == 3 else (0.5,) * channels, "default")
    facts.set("std", IMAGENET_STD if channels == 3 else (0.5,) * channels, "default")
    mean, std = tuple(facts.get("mean")), tuple(facts.get("std"))
    for what, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise CheckpointError(
                f"{what} has {len(values)} values but the input has {channels} channels; "
                f"pass --{what} with {channels} values"
            )
    if min(std) <= 0:
        raise CheckpointError(f"std must be positive, got {std}")
    if facts.get("num_classes") is None:
        raise CheckpointError(f"could not tell the number of classes of {source}; pass --num-classes")
    model = _finish_device(model, map_location)
    model.eval()
    origin = dict(facts.origin)
    if sha256:
        origin["sha256"] = "file"
    return LoadedCheckpoint(
        model=model,
        arch=facts.get("arch"),
        num_classes=int(facts.get("num_classes")),
        head_name=facts.get("head"),
        input_size=tuple(input_size),
        mean=mean,
        std=std,
        sha256=sha256,
        source=source,
        name=_text(facts.get("name")),
        probe_layers=list(facts.get("probe_layers") or []),
        origin={**origin, "preprocessing": origin.get("preprocessing", "default")},
        metadata=metadata,
        hookable=bool(metadata.get("hookable", True)),
        recipe=metadata.get("ncprobe"),
        preprocessing_config=facts.get("preprocessing"),
    )


def _text(name) -> str:
    """A name as valid text: bytes of a file name that are not UTF-8 become \\xNN escapes, so tables and
    messages can be written."""
    name = str(name)
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _check_classes(facts: _Facts, n: int, path: Path) -> None:
    want = facts.get("num_classes")
    if want is not None and want != n:
        raise CheckpointError(
            f"checkpoint {path} has {n} classes but {('--num-classes' if facts.origin['num_classes'] == 'flag' else _WHO[facts.origin['num_classes']])} "
            f"says {want}; drop --num-classes or fix it"
        )
    facts.set("num_classes", n, "inferred")


def load_checkpoint(
    source: str | Path,
    arch: str | None = None,
    *,
    num_classes: int | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
    mean=None,
    std=None,
    input_size=None,
    map_location="cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint and everything the pipeline needs to know about it.

    ``source``: a file (state_dict, wrapped state_dict, safetensors, TorchScript, or -- with
    ``trust_pickle`` -- a pickled nn.Module), a name from checkpoints.yaml, or ``timm:NAME``.
    ``trust_code``: allow code stored in the file to run (a TorchScript archive of an architecture
    ncprobe does not know, a user architecture named by the file); ``trust_pickle`` implies it.
    ``arch``: a registered name (see ``list_archs()``), ``timm:NAME``, ``path/to/file.py:Class``
    or ``pkg.module:Class``; inferred from the state_dict when None. The other arguments override
    what the file, the registry or the architecture say. The model is returned in eval mode.
    """
    if source is None or not str(source).strip():
        raise CheckpointError("no checkpoint given; pass a file, a registry name or timm:NAME")
    facts = _Facts()
    facts.set("arch", arch or None, "flag")
    if num_classes is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise CheckpointError(f"num_classes must be a positive integer, got {num_classes!r}")
        facts.set("num_classes", num_classes, "flag")
    facts.set("mean", parse_floats(mean, "mean"), "flag")
    facts.set("std", parse_floats(std, "std"), "flag")
    facts.set("input_size", parse_input_size(input_size), "flag")

    src = str(source)
    path = Path(src).expanduser()
    entry = None
    if not path.exists():
        if src.startswith("timm:"):
            return _from_timm_pretrained(src[len("timm:") :], src, facts, catalog.find_by_name(src), map_location)
        entry = catalog.find_by_name(src)
        if entry is None:
            raise CheckpointError(
                f"checkpoint {src} not found: no such file, and not a name in the checkpoint registry "
                f"({', '.join(catalog.names()[:6])}, ...); give a file path, a registry name or timm:NAME"
            )
        if str(entry.get("url") or "").startswith("hf-hub:"):
            return _from_timm_pretrained(entry["arch"][len("timm:") :], src, facts, entry, map_location)
        path = catalog.fetch(entry)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give the checkpoint file inside it")

    sha = sha256_file(path)
    by_sha = catalog.find_by_sha(sha)
    if entry is not None and entry.get("sha256") and by_sha is not entry:
        raise CheckpointError(
            f"{path} (the cached file of {entry['name']}) has sha256 {sha[:12]}..., the registry says "
            f"{entry['sha256'][:12]}...; delete it to download it again"
        )
    entry = by_sha or entry
    raw = read_checkpoint(path, trust_pickle=trust_pickle, map_location=map_location)
    sd = raw.state_dict or {}
    meta: dict[str, Any] = {
        "path": str(path),
        "format": raw.format,
        "wrapper": list(raw.wrapper),
        "file_extras": raw.extras,
        "unpickled_code": raw.unpickled_code,
    }
    if raw.file_meta:
        meta["file_metadata"] = {k: v for k, v in raw.file_meta.items() if k != "ncprobe"}
    if entry is not None:
        _registry_facts(facts, entry)
        meta["registry"] = dict(entry)
        meta["published_top1"] = entry.get("top1")
    facts.set("name", entry["name"] if entry else path.stem, "registry" if entry else "file")
    ncmeta = _file_facts(facts, raw)

    if ncmeta is not None and (facts.origin.get("arch") != "flag" or facts.get("arch") == ncmeta.get("arch")):
        named = str(ncmeta.get("arch", ""))
        if (":" in named and not named.startswith("timm:") and builtin_arch(named) is None
                and not (trust_pickle or trust_code or arch == named)):
            raise CheckpointError(
                f"checkpoint {path} builds its model with user code {named}; importing it runs that code: "
                f"pass --arch {named} (or --trust-pickle) if you trust it"
            )
        model = _from_ncprobe(raw, ncmeta, facts)
        meta["ncprobe"] = ncmeta
    elif facts.get("arch") is not None:
        spec = get_arch(facts.get("arch"))
        m = best_match(spec, sd, facts.get("num_classes"))
        if not m.exact:
            raise _mismatch_error(path, spec, facts, m, sd)
        model = _instantiate(spec, m)
        _spec_facts(facts, spec, m)
        _preprocessing_facts(facts, spec, sha)
        meta.update(stripped_prefixes=list(m.stripped), aliased_keys=m.aliased, duplicate_keys=list(m.duplicates))
        if spec.extra.get("channels_last_layers"):
            meta["channels_last_layers"] = list(spec.extra["channels_last_layers"])
    elif raw.module is not None and raw.unpickled_code:
        model = raw.module
        _module_facts(facts, model, path, f"{type(model).__module__}.{type(model).__qualname__}")
        meta["note"] = "full pickled model used as-is"
    else:
        inf = infer_arch(sd)  # the class count is read from the head, then checked against flags
        meta["inference"] = {"checked": inf.checked, "seconds": round(inf.seconds, 4), "ambiguous": inf.ambiguous}
        if inf.match is not None:
            spec = get_arch(inf.match.arch)
            want = facts.get("num_classes")
            if want is not None and inf.match.num_classes != want:
                w = inf.match.state_dict.get(spec.head + ".weight")
                head_w = tuple(w.shape) if w is not None else "?"
                raise CheckpointError(
                    f"checkpoint {path} has {inf.match.num_classes} classes ({spec.head}.weight {head_w}) but "
                    f"{'--num-classes' if facts.origin['num_classes'] == 'flag' else _WHO[facts.origin['num_classes']]} "
                    f"says {want}; drop --num-classes or fix it"
                )
            facts.set("arch", spec.name, "inferred")
            model = _instantiate(spec, inf.match)
            _spec_facts(facts, spec, inf.match)
            _preprocessing_facts(facts, spec, sha)
            meta.update(stripped_prefixes=list(inf.match.stripped), aliased_keys=inf.match.aliased,
                        duplicate_keys=list(inf.match.duplicates))
            if spec.extra.get("channels_last_layers"):
                meta["channels_last_layers"] = list(spec.extra["channels_last_layers"])
        elif raw.format == "torchscript":  # of an unknown architecture: only its own code can run it
            if not (trust_code or trust_pickle):
                why = f"its tensors cannot be read as data ({raw.extras['unreadable']})" if "unreadable" in raw.extras \
                    else "its tensors match no known architecture"
                raise CheckpointError(
                    f"checkpoint {path} is a TorchScript archive and {why}; running it runs the code stored in "
                    "the file: pass --trust-code if you trust its source, or --arch NAME to load its tensors "
                    "into a known architecture"
                )
            scripted = load_script_module(path, map_location)
            model = eager_from_scripted(scripted)
            _module_facts(facts, model, path, f"torchscript:{getattr(scripted, 'original_name', 'Module')}")
            hookable = not isinstance(model, torch.jit.ScriptModule)
            meta["hookable"] = hookable
            meta["note"] = (
                "TorchScript nn.Sequential rebuilt as an eager Sequential"
                if hookable
                else "TorchScript model used as-is: scripted modules take no forward hooks, so only logits can be probed"
            )
        else:
            raise _no_match_error(path, sd, inf.closest)
    if raw.format == "torchscript":
        meta.setdefault("note", f"TorchScript weights loaded into the eager {facts.get('arch')}")
    return _result(model, facts, sha256=sha, source=src, metadata=meta, map_location=map_location)


def _spec_facts(facts: _Facts, spec: ArchSpec, m: Match) -> None:
    origin = "inferred" if spec.extra.get("heuristic") else "default"
    facts.set("num_classes", m.num_classes, "inferred")
    facts.set("head", spec.head, origin)
    facts.set("probe_layers", list(spec.probe_layers), origin)
    facts.set("input_size", tuple(spec.input_size), origin)
    facts.set("mean", tuple(spec.mean), "default")
    facts.set("std", tuple(spec.std), "default")


def preprocessing_from_config(cfg: dict | None) -> Preprocessing | None:
    """A :class:`Preprocessing` from the plain description of a timm or torchvision config (None when
    there is none or it names something ncprobe does not apply, e.g. a random interpolation)."""
    if not cfg:
        return None
    try:
        kwargs = {"interpolation": cfg["interpolation"], "crop_mode": cfg.get("crop_mode", "center"),
                  "fill": cfg.get("fill", (0, 0, 0)), "config": cfg.get("config", "")}
        if cfg.get("resize") is not None:
            return Preprocessing(crop=cfg["crop"], resize=cfg["resize"], crop_pct=cfg.get("crop_pct"), **kwargs)
        if not cfg.get("crop_pct") or cfg["crop_pct"] <= 0:
            return None
        return Preprocessing.from_crop_pct(cfg["crop"], cfg["crop_pct"], **kwargs)
    except (KeyError, TypeError, ValueError):
        return None


def _preprocessing_facts(facts: _Facts, spec: ArchSpec, sha256: str) -> None:
    """The evaluation transform of a timm or torchvision architecture's pretrained configuration."""
    if spec.family == "timm":
        cfg = timm_eval_config(dict(spec.extra.get("pretrained_cfg") or {}))
    elif spec.name.startswith("tv:"):
        cfg = tv_eval_config(spec.name, sha256)
    else:
        return
    facts.set("preprocessing", preprocessing_from_config(cfg), "model-config")


def _module_facts(facts: _Facts, model: nn.Module, path: Path, arch: str) -> None:
    head = find_head(model)
    if head is None:
        raise CheckpointError(
            f"checkpoint {path} holds a model with no nn.Linear classifier; pass --arch to load its weights "
            "into a known architecture"
        )
    modules = dict(model.named_modules())
    out = modules[head].weight.shape[0]
    _check_classes(facts, int(out), path)
    facts.set("arch", arch, "file")
    facts.set("head", head, "inferred")
    input_size = facts.get("input_size") or guess_input_size(model)
    facts.set("probe_layers", probe_layers_for_model(model, head, input_size), "inferred")
    facts.set("input_size", guess_input_size(model), "inferred")


def _from_ncprobe(raw: RawCheckpoint, meta: dict, facts: _Facts) -> nn.Module:
    model, head, probes = build_model_from_meta(meta)
    try:
        model.load_state_dict(raw.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {raw.path}: its ncprobe metadata does not match its tensors ({_short(exc)}); "
            "the file is damaged or was edited"
        ) from None
    facts.set("head", head, "file")
    facts.set("probe_layers", list(probes), "file")
    if facts.get("num_classes") is None:
        out = getattr(submodule(model, head), "out_features", None)
        facts.set("num_classes", out, "inferred")
    return model
