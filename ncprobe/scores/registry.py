"""Scorers by name: ``register_scorer`` (class decorator), ``get_scorer``, ``list_scorers``."""

from __future__ import annotations

import inspect

from ..errors import ScoringError
from .base import Scorer

__all__ = ["register_scorer", "get_scorer", "list_scorers", "scorer_class"]

_REGISTRY: dict[str, type[Scorer]] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Register a :class:`Scorer` subclass under ``cls.name`` (lower case); returns the class."""
    if not (inspect.isclass(cls) and issubclass(cls, Scorer)) or not cls.name:
        raise TypeError("register_scorer expects a Scorer subclass with a non-empty `name`")
    key = cls.name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(
            f"a scorer named {key!r} is already registered ({_REGISTRY[key].__name__})"
        )
    _REGISTRY[key] = cls
    return cls


def list_scorers() -> list[str]:
    """Registered scorer names, sorted."""
    return sorted(_REGISTRY)


def scorer_class(name: str) -> type[Scorer]:
    """The class registered under ``name``; ScoringError listing the choices if unknown."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ScoringError(f"unknown scorer {name!r}; choose one of: {', '.join(list_scorers())}")
    return _REGISTRY[key]


def get_scorer(name: str, **params) -> Scorer:
    """A new, unfitted scorer ``name`` with hyper-parameters ``params`` (e.g. get_scorer('knn', k=10))."""
    cls = scorer_class(name)
    allowed = cls._param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ScoringError(
            f"scorer {cls.name!r} has no parameter {', '.join(unknown)}; "
            f"its parameters are: {', '.join(allowed) or '(none)'}"
        )
    return cls(**params)
