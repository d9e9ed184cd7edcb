"""Scorers by name: ``register_scorer`` (class decorator), ``get_scorer``, ``list_scorers``.

The registry is the one source of every scorer list: ``list_scorers()`` is ``--scorers all``,
``default_scorers()`` the default set (the classes marked ``default = True``), and
``scorers_help()`` the ``--scorers`` help text.
"""

from __future__ import annotations

import inspect

from ..errors import ScoringError
from .base import Scorer

__all__ = ["register_scorer", "get_scorer", "list_scorers", "default_scorers", "scorer_class", "scorers_help",
           "scorer_table"]

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


def list_scorers(*, registration_order: bool = False) -> list[str]:
    """Registered scorer names, sorted (or in registration order: what ``--scorers all`` runs,
    families together, in the order the tables show them)."""
    return list(_REGISTRY) if registration_order else sorted(_REGISTRY)


def default_scorers() -> list[str]:
    """The default set (classes marked ``default = True``) in registration order, the order of the
    tables' columns."""
    return [name for name, cls in _REGISTRY.items() if cls.default]


def scorers_help() -> str:
    """The ``--scorers`` help text, from the registry."""
    defaults = default_scorers()
    feature = [n for n in defaults if _REGISTRY[n].input != "logits"]
    logit = [n for n in defaults if _REGISTRY[n].input == "logits"]
    others = [n for n in list_scorers(registration_order=True) if not _REGISTRY[n].default]
    text = (f"Comma-separated scorers, or 'all' for every registered one. Default: feature scorers "
            f"{', '.join(feature)}; logit scorers {', '.join(logit)}.")
    if others:
        text += f" Also available: {', '.join(others)}."
    return text


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
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items() if k in allowed}
    for key, value in params.items():
        _check_type(cls.name, key, value, defaults.get(key, inspect.Parameter.empty))
    try:
        return cls(**params)
    except ScoringError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ScoringError(f"scorer {cls.name!r}: bad parameter value ({exc}); see the scorer table in the README") from None


def _check_type(scorer: str, key: str, value, default) -> None:
    """A value must have its default's kind: a bool for a bool, a whole number for an int, a finite
    number for a float (None stays allowed where the default is None or a number)."""
    import math

    where = f"scorer {scorer!r} parameter {key}"
    if value is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScoringError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, int) or (default is None and isinstance(value, int) and not isinstance(value, bool)):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ScoringError(f"{where} must be a whole number, got {value!r}")
    elif isinstance(default, float) or (default is None and isinstance(value, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScoringError(f"{where} must be a finite number, got {value!r}")


def scorer_table() -> str:
    """The README's table of scorers (markdown), in registration order: name, paper, input, default
    parameters, tunable grid, and whether it is in the default set."""
    from .base import params_string

    def grid_text(grid: dict) -> str:
        return "; ".join(f"{k} in {{{', '.join(map(str, v))}}}" for k, v in grid.items()) or "-"

    rows = ["| scorer | paper | input | defaults | tuning grid (`--val-ood`) | default set |",
            "|---|---|---|---|---|---|"]
    for name in list_scorers(registration_order=True):
        cls = _REGISTRY[name]
        scorer = cls()
        what = "logits" if cls.input == "logits" else ("penultimate + head" if cls.needs_head else "any layer")
        if cls.needs_labels:
            what += ", labels"
        defaults = params_string({k: v for k, v in scorer.get_params().items()
                                  if k not in cls.execution_params and k not in cls.optional_params})
        rows.append(f"| `{name}` | {cls.paper} | {what} | {defaults or '-'} | {grid_text(cls.grid)} | "
                    f"{'yes' if cls.default else ''} |")
    return "\n".join(rows)
