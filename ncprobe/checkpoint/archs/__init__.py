"""Architecture families. Importing this package imports every module in it, so each family's
``@register_arch`` runs; a module added by anyone (e.g. ``small_cnn.py``) registers itself with no
edit here."""

from __future__ import annotations

import importlib
import pkgutil
import warnings

from .registry import (
    ArchSpec,
    create_model,
    family_inferrers,
    get_arch,
    list_archs,
    register_arch,
    register_arch_inferrer,
    register_arch_pattern,
)

__all__ = [
    "ArchSpec",
    "create_model",
    "family_inferrers",
    "get_arch",
    "list_archs",
    "register_arch",
    "register_arch_inferrer",
    "register_arch_pattern",
]


def _import_families() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "registry":
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except Exception as exc:  # one broken family must not take the others down
            warnings.warn(f"ncprobe: architecture module {info.name!r} failed to import: {exc!r}", stacklevel=2)


_import_families()
