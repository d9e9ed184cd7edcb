"""Architecture families, one module each. Importing this package imports every module in it, so
each family's ``@register_arch`` runs; a module added by anyone registers itself with no edit here."""

from __future__ import annotations

import importlib
import pkgutil
import warnings


def _import_families() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except Exception as exc:  # one broken family must not take the others down
            warnings.warn(f"ncprobe: architecture module {info.name!r} failed to import: {exc!r}", stacklevel=2)


_import_families()
