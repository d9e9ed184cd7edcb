"""A name -> architecture registry, in the manner of timm's ``register_model``.

Besides fixed names (``register_arch``) the registry knows:

* name patterns (``register_arch_pattern``): ``wrn22_3`` or ``cifar_resnet74`` are built on demand
  from a regular expression, so a family need not list every depth/width;
* family inferrers (``register_arch_inferrer``): a function that looks at a state_dict's keys and
  shapes and proposes the few members of its family worth comparing (e.g. the depth from the
  number of blocks), so architecture inference never builds a 1202-layer model needlessly;
* ``timm:NAME`` and ``path/to/file.py:Class`` / ``pkg.module:Class`` names, resolved lazily by
  :mod:`ncprobe.models.external`.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

from torch import nn

from ..errors import CheckpointError
from .external import external_spec
from .spec import ArchSpec

_ARCHS: dict[str, ArchSpec] = {}
_DYNAMIC: dict[str, ArchSpec] = {}  # pattern / timm / user-class specs, built on first use
_PATTERNS: list[tuple[re.Pattern, Callable[[re.Match], ArchSpec | None]]] = []
_INFERRERS: dict[str, Callable[[dict], list[str]]] = {}


def register_arch(name: str, *, head: str, probe_layers, **kwargs):
    """Decorator: register ``fn(num_classes=...) -> nn.Module`` under ``name``."""

    def deco(fn):
        if name in _ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        _ARCHS[name] = ArchSpec(name=name, builder=fn, head=head, probe_layers=tuple(probe_layers), **kwargs)
        return fn

    return deco


def register_arch_pattern(pattern: str, factory: Callable[[re.Match], ArchSpec | None]) -> None:
    """Let ``get_arch`` build specs for names matching ``pattern`` (full match) on demand.

    ``factory(match)`` returns an :class:`ArchSpec` or None when the name is not valid (e.g. a
    depth that is not 6n+2).
    """
    _PATTERNS.append((re.compile(pattern), factory))


def register_arch_inferrer(family: str, fn: Callable[[dict], list[str]]) -> None:
    """Register ``fn(shapes: {key: shape tuple}) -> [arch names]`` for a family.

    Architecture inference only compares a state_dict against the members of ``family`` that
    ``fn`` proposes (best first; may be near misses), instead of every registered member. ``fn``
    never raises as far as callers see: inference runs every family's inferrer on every file, and
    odd shapes mean "not this family".
    """

    @functools.wraps(fn)
    def never_raises(shapes: dict) -> list[str]:
        try:
            return list(fn(shapes))
        except Exception:  # noqa: BLE001 - see above
            return []

    _INFERRERS[family] = never_raises


def register_spec(spec: ArchSpec) -> ArchSpec:
    """Register a ready-made :class:`ArchSpec` under ``spec.name`` (the decorator form is :func:`register_arch`)."""
    if spec.name in _ARCHS:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    _ARCHS[spec.name] = spec
    return spec


def family_inferrers() -> dict[str, Callable[[dict], list[str]]]:
    return dict(_INFERRERS)


def get_arch(name: str) -> ArchSpec:
    """The spec of a registered name, a pattern name (``wrn22_3``), ``timm:NAME`` or ``file.py:Class``."""
    if name in _ARCHS:
        return _ARCHS[name]
    if name in _DYNAMIC:
        return _DYNAMIC[name]
    for pattern, factory in _PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            spec = factory(m)
            if spec is not None:
                _DYNAMIC[name] = spec
                return spec
    if name.startswith("timm:") or ":" in name:
        spec = external_spec(name)
        _DYNAMIC[name] = spec
        return spec
    known = ", ".join(sorted(_ARCHS))
    raise CheckpointError(f"unknown architecture {name!r}; known: {known}, or timm:NAME, or path.py:Class")


def builtin_arch(name: str) -> ArchSpec | None:
    """The spec of a registered or pattern name (``tv:resnet18``, ``wrn22_3``), else None; never
    resolves ``timm:`` or ``file.py:Class`` names, so it is safe on names read from a file."""
    if not isinstance(name, str):
        return None
    if name in _ARCHS:
        return _ARCHS[name]
    for pattern, factory in _PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            try:
                spec = factory(m)
            except CheckpointError:
                return None
            if spec is not None:
                return spec
    return None


def list_archs(*, registration_order: bool = False) -> list[str]:
    """Registered names, sorted (or in registration order: families together, small to large)."""
    return list(_ARCHS) if registration_order else sorted(_ARCHS)


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    spec = get_arch(name)
    return spec.builder(num_classes=num_classes or spec.default_num_classes, **kwargs)
