"""One progress bar for every long loop (forward passes, scoring, training epochs).

``progress_bar(total, desc, enabled)`` is a tqdm bar on stderr that disappears when done, or a
no-op object with the same ``update`` / ``set_postfix`` / ``close`` when progress is off, so callers
never test ``enabled`` themselves and tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import sys


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True, *, unit: str = "it", unit_scale: bool = False):
    """A bar over ``total`` steps labelled ``desc``; a silent stand-in when ``enabled`` is False."""
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False, dynamic_ncols=True,
                file=sys.stderr)
