"""Benchmark presets: the sets of a standard protocol (OpenOOD v1.5, DDU), read from data.

The presets live in ``ncprobe/benchmarks.yaml`` (override with ``$NCPROBE_BENCHMARKS``). A preset
names its ID test set, fit set, near- and far-OOD sets, validation OOD sets and covariate-shifted
ID sets; :func:`resolve_preset` turns it into loaded, checked data sources, with ``--set NAME=SPEC``
overrides, and reports every missing set in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data import default_data_root
from ..data.source import DataSource
from ..errors import DatasetError, ParameterError

ROLES = ("id", "fit", "near", "far", "val", "csid")
#: roles holding exactly one set
SINGLE = ("id", "fit")
OOD_GROUPS = ("near", "far")


def presets_file() -> Path:
    return Path(os.environ.get("NCPROBE_BENCHMARKS") or Path(__file__).resolve().parents[1] / "benchmarks.yaml")


@dataclass(frozen=True)
class Preset:
    """A benchmark protocol: role -> {set name: spec}."""

    name: str
    title: str
    sets: dict[str, dict[str, str]]
    notes: str = ""

    def names(self) -> list[str]:
        return [n for role in ROLES for n in self.sets.get(role, {})]

    def role_of(self, set_name: str) -> str:
        return next(role for role in ROLES if set_name in self.sets.get(role, {}))


def load_presets(path=None) -> dict[str, Preset]:
    """Every preset of the presets file, checked: known roles, one ID and one fit set, at least one
    OOD set, set names unique within a preset."""
    path = Path(path) if path is not None else presets_file()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read the benchmark presets {path}: {' '.join(str(exc).split())}; "
                             "fix the file or unset NCPROBE_BENCHMARKS") from None
    out = {}
    for name, body in (data.get("presets") or {}).items():
        where = f"{path}: preset {name!r}"
        if not isinstance(body, dict):
            raise ParameterError(f"{where} is not a mapping")
        unknown = set(body) - set(ROLES) - {"title", "notes"}
        if unknown:
            raise ParameterError(f"{where} has unknown keys {', '.join(sorted(unknown))}; use {', '.join(ROLES)}")
        sets = {role: {str(k): str(v) for k, v in (body.get(role) or {}).items()} for role in ROLES}
        for role in SINGLE:
            if len(sets[role]) != 1:
                raise ParameterError(f"{where} needs exactly one {role} set, has {len(sets[role])}")
        if not sets["near"] and not sets["far"]:
            raise ParameterError(f"{where} has no near or far OOD set")
        names = [n for role in ROLES for n in sets[role]]
        if len(names) != len(set(names)):
            raise ParameterError(f"{where} uses a set name twice; each set needs its own name")
        out[str(name)] = Preset(name=str(name), title=str(body.get("title") or name), sets=sets,
                                notes=" ".join(str(body.get("notes") or "").split()))
    return out


def get_preset(name: str, path=None) -> Preset:
    presets = load_presets(path)
    if name not in presets:
        raise ParameterError(f"unknown benchmark preset {name!r}; choose one of: {', '.join(presets)}")
    return presets[name]


def parse_overrides(items) -> dict[str, str]:
    """``["svhn=/data/svhn.npz", ...]`` -> {name: spec}."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, spec = str(item).partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ParameterError(f"{{sets}} {item!r} is not NAME=SPEC; e.g. svhn=../data/svhn.npz")
        out[name.strip()] = spec.strip()
    return out


@dataclass
class BenchSources:
    """A preset's sets, loaded: what ``layers_many`` needs, plus each OOD set's group."""

    preset: Preset
    id: DataSource
    fit: DataSource
    ood: list[DataSource]
    ood_groups: dict[str, str]
    val: list[DataSource] = field(default_factory=list)
    csid: list[DataSource] = field(default_factory=list)


def _reason(exc: Exception) -> str:
    """The first clause of a loader's error: what is missing and where it looked."""
    return " ".join(str(exc).split(";")[0].split())


def resolve_preset(preset: Preset, *, data_root=None, overrides=None, full_spectrum: bool = False,
                   tune: bool = False, download: bool = False) -> BenchSources:
    """Load every set the run needs (val only with ``tune``, csid only with ``full_spectrum``).

    Sets that cannot be loaded are reported together in one :class:`DatasetError` that lists what
    the preset needs and where each missing set was looked for.
    """
    from ..data import load_dataset

    overrides = dict(overrides or {})
    unknown = set(overrides) - set(preset.names())
    if unknown:
        raise ParameterError(f"--set names {', '.join(sorted(unknown))} are not sets of preset {preset.name!r}; "
                             f"its sets are: {', '.join(preset.names())}")
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    roles = [r for r in ROLES if (r != "val" or tune) and (r != "csid" or full_spectrum)]
    if tune and not preset.sets["val"]:
        raise ParameterError(f"preset {preset.name!r} names no validation OOD set to tune on; drop --tune")
    if full_spectrum and not preset.sets["csid"]:
        raise ParameterError(f"preset {preset.name!r} names no covariate-shifted ID set; drop --full-spectrum")
    loaded: dict[str, DataSource] = {}
    missing: list[str] = []
    for role in roles:
        for name, spec in preset.sets[role].items():
            text = overrides.get(name, spec.replace("{data_root}", str(root)))
            split = "train" if role == "fit" else "test"
            try:
                loaded[name] = load_dataset(f"{name}={text}", data_root=root, download=download, default_split=split)
            except DatasetError as exc:
                missing.append(f"{name} = {text} ({_reason(exc)})")
    if missing:
        needs = ", ".join(f"{role}: {'/'.join(preset.sets[role])}" for role in roles if preset.sets[role])
        raise DatasetError(f"preset {preset.name!r} needs {needs}; missing: {'; '.join(missing)}. Put the sets under "
                           f"--data-root (now {root}) or point each with --set NAME=SPEC")
    pick = lambda role: [loaded[n] for n in preset.sets[role]]  # noqa: E731 - one-line lookup
    ood = pick("near") + pick("far")
    groups = {n: role for role in OOD_GROUPS for n in preset.sets[role]}
    return BenchSources(preset=preset, id=pick("id")[0], fit=pick("fit")[0], ood=ood, ood_groups=groups,
                        val=pick("val") if tune else [], csid=pick("csid") if full_spectrum else [])
