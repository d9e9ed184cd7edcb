"""Which tensors to capture: resolving probe-point names against a model.

A probe point is a dotted module path (its output is captured), or one of the two names every
model has: ``penultimate`` (exactly the tensor that enters the classifier head) and ``logits``
(the model's output). ``all`` means every named module whose output is a tensor.
"""

from __future__ import annotations

import difflib

from torch import nn

from ..errors import NcprobeError

PENULTIMATE = "penultimate"
LOGITS = "logits"
ALL = "all"


def resolve_layers(model: nn.Module, head_name: str, default: list[str], layers) -> list[str]:
    """Turn the user's ``--layers`` into an ordered list of probe names.

    ``None`` gives the checkpoint's default probe points; ``[]`` none but the two below; ``"all"`` every named module (outputs that
    are not tensors are dropped at extraction); a comma-separated string or a list picks by name.
    ``penultimate`` and ``logits`` are always included, last, in that order.
    """
    modules = dict(model.named_modules())
    modules.pop("", None)
    if layers is None or layers == "":
        chosen = list(default)
    elif layers == ALL or layers == [ALL]:
        chosen = list(modules)
    else:
        if isinstance(layers, str):
            layers = [p for p in layers.split(",")]
        chosen = []
        for item in layers:
            for name in str(item).split(","):
                name = name.strip()
                if not name:
                    continue
                if name in (PENULTIMATE, LOGITS):
                    continue
                if name == ALL:
                    chosen.extend(modules)
                    continue
                if name not in modules:
                    close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.5)
                    hint = f"; did you mean {', '.join(close)}?" if close else ""
                    raise NcprobeError(
                        f"layer {name!r} is not a module of this model{hint} "
                        f"(see `ncprobe inspect CKPT` for the probe points, or use --layers all)"
                    )
                chosen.append(name)
    order = {name: i for i, name in enumerate(modules)}
    seen = set()
    unique = []
    for name in sorted(chosen, key=lambda n: order.get(n, len(order))):
        if name not in seen:
            seen.add(name)
            unique.append(name)
    return unique + [PENULTIMATE, LOGITS]
