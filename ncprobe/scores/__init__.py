"""Post-hoc OOD scorers by name. Every score is float64, HIGHER = MORE IN-DISTRIBUTION.

``get_scorer(name, **params)`` builds one; ``list_scorers()`` names them all, ``default_scorers()``
the default set; ``register_scorer`` adds one. Every module in this package registers its scorers
when the package is imported, so a new scorer is one file (plus its test) with no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Scorer
from .registry import (
    default_scorers,
    get_scorer,
    list_scorers,
    register_scorer,
    scorer_class,
    scorer_table,
    scorers_help,
)

__all__ = ["Scorer", "default_scorers", "get_scorer", "list_scorers", "register_scorer", "scorer_class",
           "scorer_table", "scorers_help"]

# The first families in the order the tables show them (logit scores, Gaussian, neighbours,
# subspace, geometry, probe energy); every other module of the package after them, by name.
_FIRST = ("logit", "gaussian", "neighbours", "subspace", "geometry", "probe_energy")
_SKIP = {"base", "registry"}


def _import_scorer_modules() -> None:
    others = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _SKIP and not m.name.startswith("_"))
    for name in [*_FIRST, *(n for n in others if n not in _FIRST)]:
        importlib.import_module(f"{__name__}.{name}")


_import_scorer_modules()
