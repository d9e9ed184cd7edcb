"""Heads that control neural collapse: plain CE, L2-normalized features, a fixed ETF projector.

Every fine-tuned model is an :class:`NCModel`::

    x -> encoder -> h (pooled embedding) -> [mode-specific neck] -> classifier -> logits

``encoder`` is the original network with its classifier replaced by ``nn.Identity`` (so
``encoder(x)`` is the pooled embedding h), ``classifier`` is always an ``nn.Linear`` and its
*input* is what the rest of ncprobe calls the ``penultimate`` feature. Modes:

``ce``        classifier = the original head (weights kept; a fresh Linear when the number of
              classes changes). Plain cross-entropy: the baseline.
``l2``        ``norm`` = :class:`L2Normalize` then a fresh Linear, ``logits = W (h/||h||) + b``
              (Haas, Yolland, Rabus, TMLR 2023). Optional scale s (``l2_scale``, fixed or learned
              with ``learn_scale``): the classifier input is then ``s h/||h||``.
``etf``       ``projector`` = frozen, bias-free ``Linear(d, w) -> ReLU -> Linear(w, d)`` with
              fixed simplex-ETF-style weights (:func:`etf_weight`), ``proj_norm`` = L2Normalize,
              then a fresh trainable Linear (Harun, Gallardo, Kanan, ICML 2025).
``entropy``   the ``ce`` head; the training loss adds the KoLeo entropy regularizer on h.
``etf+entropy`` the ``etf`` head plus the KoLeo regularizer: the full Harun et al. recipe.

Probe points (module names): ``encoder`` (h), ``projector`` (its output, before normalization)
and ``classifier`` (logits); the base network's own layers are ``encoder.<name>``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NcprobeError

MODES = ("ce", "l2", "etf", "entropy", "etf+entropy")
ETF_MODES = ("etf", "etf+entropy")
ENTROPY_MODES = ("entropy", "etf+entropy")
CE_HEAD_MODES = ("ce", "entropy")


def check_mode(mode: str) -> str:
    """Return ``mode`` if known, else raise NcprobeError listing the modes."""
    if mode not in MODES:
        raise NcprobeError(f"unknown fine-tuning mode {mode!r}; choose one of: {', '.join(MODES)}")
    return mode


class L2Normalize(nn.Module):
    """``x -> s * x / max(||x||_2, eps)`` over dim 1; s = 1 (default), a fixed float, or learned."""

    def __init__(self, scale: float | None = None, learn_scale: bool = False, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        if learn_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale if scale is not None else 1.0)))
        elif scale is not None:
            self.register_buffer("scale", torch.tensor(float(scale)))
        else:
            self.scale = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.flatten(1), p=2.0, dim=1, eps=self.eps)
        return x if self.scale is None else x * self.scale

    def extra_repr(self) -> str:
        if self.scale is None:
            return "scale=None"
        kind = "learned" if isinstance(self.scale, nn.Parameter) else "fixed"
        return f"scale={self.scale.detach().item():.4g} ({kind})"


def etf_weight(out_features: int, in_features: int, c: int) -> torch.Tensor:
    """Fixed projector weight ``sqrt(c/(c-1)) * (I_rect - 1 1^T / c)`` of shape (out, in).

    ``I_rect`` is the rectangular identity (ones on the main diagonal, ``torch.eye(out, in)``) and
    ``1 1^T`` the all-ones (out, in) matrix. Harun et al. (ICML 2025) use c = 512, the embedding
    dimension, for both projector layers; ncprobe uses c = d, the embedding dimension, likewise.
    """
    if c < 2:
        raise NcprobeError(f"the ETF projector needs an embedding of at least 2 dimensions, got {c}")
    eye = torch.eye(out_features, in_features, dtype=torch.float64)
    w = math.sqrt(c / (c - 1)) * (eye - torch.ones(out_features, in_features, dtype=torch.float64) / c)
    return w.to(torch.float32)


def make_etf_projector(dim: int, width: int = 2048) -> nn.Sequential:
    """Frozen bias-free ``Linear(dim, width) -> ReLU -> Linear(width, dim)``, both weights from
    :func:`etf_weight` with c = dim; parameters have requires_grad=False but stay in the state_dict."""
    proj = nn.Sequential(nn.Linear(dim, width, bias=False), nn.ReLU(), nn.Linear(width, dim, bias=False))
    with torch.no_grad():
        proj[0].weight.copy_(etf_weight(width, dim, dim))
        proj[2].weight.copy_(etf_weight(dim, width, dim))
    for p in proj.parameters():
        p.requires_grad_(False)
    return proj


class NCModel(nn.Module):
    """encoder -> (norm | projector -> proj_norm)? -> classifier; see the module docstring."""

    def __init__(self, encoder: nn.Module, classifier: nn.Linear, mode: str, num_classes: int,
                 embed_dim: int, head_opts: dict | None = None):
        super().__init__()
        self.mode = check_mode(mode)
        self.num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.head_opts = dict(head_opts or {})
        self.encoder = encoder
        if mode == "l2":
            self.norm = L2Normalize(self.head_opts.get("l2_scale"), bool(self.head_opts.get("learn_scale", False)))
        if mode in ETF_MODES:
            self.projector = make_etf_projector(self.embed_dim, int(self.head_opts.get("projector_dim", 2048)))
            self.proj_norm = L2Normalize()
        self.classifier = classifier

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled encoder embedding h, flattened to (B, d)."""
        return self.encoder(x).flatten(1)

    def neck(self, h: torch.Tensor) -> torch.Tensor:
        """Map h to the classifier input (the ``penultimate`` feature)."""
        if self.mode == "l2":
            return self.norm(h)
        if self.mode in ETF_MODES:
            return self.proj_norm(self.projector(h))
        return h

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.embed(x))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, h): h is the encoder embedding that the entropy regularizer acts on."""
        h = self.embed(x)
        return self.classifier(self.neck(h)), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.neck(self.embed(x)))


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _embed_dim(encoder: nn.Module, head: nn.Module | None, input_size) -> int:
    if isinstance(head, nn.Linear):
        return int(head.in_features)
    # not a Linear head: run one dummy sample through the encoder (in eval mode, no grad)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            p = next(encoder.parameters(), None)
            x = torch.zeros(1, *tuple(input_size), device=p.device if p is not None else "cpu")
            d = int(encoder(x).flatten(1).shape[1])
    finally:
        encoder.train(was_training)
    return d


def wrap_model(base: nn.Module, head_name: str, mode: str, num_classes: int, **head_opts) -> NCModel:
    """Turn a classifier network into an :class:`NCModel` for ``mode``.

    ``base`` is modified in place (its module ``head_name`` becomes ``nn.Identity``) and becomes the
    ``encoder``. ``head_opts``: ``projector_dim`` (etf modes, default 2048), ``l2_scale`` (float or
    None) and ``learn_scale`` (l2 mode), ``input_size`` (C,H,W, only used to find the embedding size
    when the head is not an ``nn.Linear``). An ``NCModel`` given as ``base`` is re-wrapped: its
    encoder is reused and its classifier kept only for ce/entropy over a ce/entropy model.
    """
    check_mode(mode)
    num_classes = int(num_classes)
    input_size = head_opts.pop("input_size", (3, 32, 32))
    if isinstance(base, NCModel):
        encoder = base.encoder
        head = base.classifier if base.mode in CE_HEAD_MODES else None
        embed_dim = base.embed_dim
    else:
        try:
            head = base.get_submodule(head_name)
        except AttributeError as exc:
            raise NcprobeError(f"the model has no module {head_name!r} to use as its classifier; "
                               "name the head module that maps the pooled feature to logits") from exc
        _set_submodule(base, head_name, nn.Identity())
        encoder = base
        embed_dim = _embed_dim(encoder, head, input_size)
    keep = False
    if mode in CE_HEAD_MODES and head is not None:
        out = getattr(head, "out_features", None)  # a non-Linear head cannot be checked: keep it
        keep = out is None or (out == num_classes and getattr(head, "in_features", embed_dim) == embed_dim)
    if keep:
        classifier = head
    else:
        classifier = nn.Linear(embed_dim, num_classes)
        p = next(encoder.parameters(), None)
        if p is not None:
            classifier = classifier.to(p.device)
    opts = {}
    if mode in ETF_MODES:
        opts["projector_dim"] = int(head_opts.get("projector_dim", 2048) or 2048)
    if mode == "l2":
        scale = head_opts.get("l2_scale")
        opts["l2_scale"] = None if scale is None else float(scale)
        opts["learn_scale"] = bool(head_opts.get("learn_scale", False))
    model = NCModel(encoder, classifier, mode, num_classes, embed_dim, opts)
    p = next(encoder.parameters(), None)
    return model.to(p.device) if p is not None else model
