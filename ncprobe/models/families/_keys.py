"""Reading a state_dict's key layout: shared by the families' inferrers."""

from __future__ import annotations

import re


def key_indices(shapes: dict, regex: re.Pattern) -> dict[str, set[int]]:
    """``{group(1): {int(group(2)), ...}}`` over the keys that ``regex`` matches at their start, e.g.
    the block indices of each stage from ``layer(\\d)\\.(\\d+)\\.``."""
    out: dict[str, set[int]] = {}
    for key in shapes:
        m = regex.match(key)
        if m:
            out.setdefault(m.group(1), set()).add(int(m.group(2)))
    return out
