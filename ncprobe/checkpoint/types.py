"""What a loaded checkpoint hands to the rest of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedCheckpoint:
    """A model in eval mode plus every fact the pipeline needs about it.

    ``origin`` maps each fact (``arch``, ``num_classes``, ``mean``, ``std``, ``input_size``, ...) to
    where it came from: ``registry`` (checkpoints.yaml matched by sha256 or name), ``file`` (metadata
    stored in the checkpoint), ``inferred`` (from state_dict keys and shapes), ``flag`` (the user
    said so) or ``default``.
    """

    model: nn.Module
    arch: str
    num_classes: int
    head_name: str  # dotted module path of the classifier; its input is the `penultimate` feature
    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str
    source: str  # the path or name the user gave
    name: str  # short display name (registry name or file stem)
    probe_layers: list[str] = field(default_factory=list)  # default probe points, stem to head
    origin: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # registry entry, training config, ...

    @property
    def head(self) -> nn.Module:
        return self.model.get_submodule(self.head_name)

    def head_weights(self) -> tuple[Any, Any] | None:
        """(W, b) of the classifier as float64 numpy arrays, or None if the head is not linear."""
        head = self.head
        if not isinstance(head, nn.Linear):
            return None
        w = head.weight.detach().to("cpu", torch.float64).numpy()
        b = None if head.bias is None else head.bias.detach().to("cpu", torch.float64).numpy()
        if b is None:
            import numpy as np

            b = np.zeros(w.shape[0])
        return w, b

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
