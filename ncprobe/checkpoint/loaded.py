"""What a loaded checkpoint hands to the rest of the pipeline."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.transforms import Preprocessing


@dataclass
class LoadedCheckpoint:
    """A model in eval mode plus every fact the pipeline needs about it.

    ``origin`` maps each fact (``arch``, ``num_classes``, ``mean``, ``std``, ``input_size``, ...) to
    where it came from: ``registry`` (checkpoints.yaml matched by sha256 or name), ``file`` (metadata
    stored in the checkpoint), ``inferred`` (from state_dict keys and shapes), ``flag`` (the user
    said so), ``model-config`` (the pretrained configuration of the architecture: timm's
    ``pretrained_cfg``, torchvision's ``weights.transforms()``) or ``default``.
    ``origin["preprocessing"]`` says where :attr:`preprocessing` came from.
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
    metadata: dict[str, Any] = field(default_factory=dict)  # a record for `inspect`: format, registry entry, ...
    #: False for a TorchScript module that takes no forward hooks: only its logits can be probed
    hookable: bool = True
    #: the fine-tuning recipe stored in an ncprobe checkpoint (mode, head, config, history), else None
    recipe: dict[str, Any] | None = None
    #: the evaluation transform of image files as the model's configuration states it (for its own
    #: input size), or None for ncprobe's default; read it through :attr:`preprocessing`
    preprocessing_config: Preprocessing | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        """The NC-control recipe an ncprobe checkpoint was trained with ('' for other checkpoints)."""
        return str((self.recipe or {}).get("mode") or "")

    @property
    def recipe_id(self) -> str:
        """The training recipe of an ncprobe checkpoint as ``MODE:HASH`` ('' for other checkpoints):
        HASH covers every training setting except the seed and the source file's path, so the
        seeds of one recipe share it and the leaderboard may pool them."""
        config = dict((self.recipe or {}).get("config") or {})
        if not config:
            return ""
        for key in ("seed", "source", "val"):
            config.pop(key, None)
        text = json.dumps({"config": config, "head": (self.recipe or {}).get("head")}, sort_keys=True, default=str)
        return f"{self.mode or 'ce'}:{hashlib.sha256(text.encode()).hexdigest()[:10]}"

    @property
    def epoch(self) -> int | None:
        """How many epochs an ncprobe checkpoint was trained for (its stored history), else None."""
        history = (self.recipe or {}).get("history")
        return len(history) if history else None

    @property
    def preprocessing(self) -> Preprocessing:
        """How images decoded from files are brought to :attr:`input_size` (resize, interpolation,
        centre crop): the model's configured transform, its resize following ``crop_pct`` when the
        input size was changed (a flag, calibration); ncprobe's default when nothing configured it."""
        crop = tuple(self.input_size[-2:])
        if self.preprocessing_config is None:
            return Preprocessing(crop=crop)
        return self.preprocessing_config.at(crop)

    @property
    def weights_fingerprint(self) -> str:
        """A hash of the weights (computed once): identifies a checkpoint that has no file hash."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    @property
    def head(self) -> nn.Module:
        return submodule(self.model, self.head_name)

    def head_weights(self) -> tuple[Any, Any] | None:
        """(W, b) of the classifier as float64 numpy arrays, or None if the head is not linear."""
        head = self.head
        if not isinstance(head, nn.Linear):
            return None
        w = head.weight.detach().to("cpu", torch.float64).numpy()
        b = None if head.bias is None else head.bias.detach().to("cpu", torch.float64).numpy()
        if b is None:
            b = np.zeros(w.shape[0])
        return w, b

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer, for checkpoints that have no file to hash."""
    h = hashlib.sha256()
    for name, tensor in list(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``, also for TorchScript modules (which do not support it)."""
    if not isinstance(model, torch.jit.ScriptModule):
        return model.get_submodule(name)
    modules = dict(model.named_modules())
    if name not in modules:
        raise AttributeError(f"{type(model).__name__} has no submodule {name!r}")
    return modules[name]


_SHAPE_WORDS = ("size", "shape", "dimension", "mat1", "channels", "expected input", "Expected")


def input_size_error(ckpt: LoadedCheckpoint, exc: BaseException):
    """A one-line CheckpointError when ``exc`` (raised by the model's forward) reads like an input
    shape mismatch, else None: the model expects another input size than the one ncprobe used."""
    from ..errors import CheckpointError

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__  # TorchScript errors end with the real message
    if not isinstance(exc, RuntimeError) or not any(w in text for w in _SHAPE_WORDS):
        return None
    size = ",".join(map(str, ckpt.input_size))
    origin = ckpt.origin.get("input_size", "default")
    return CheckpointError(
        f"the model fails on inputs of size {size} (input size from: {origin}): {text[:160]}; pass the size it "
        "was trained on with --input-size C,H,W"
    )
