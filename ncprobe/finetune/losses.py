"""Training losses: cross-entropy with label smoothing plus the KoLeo entropy regularizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.nc_heads import ENTROPY_MODES, ETF_MODES, check_mode

KOLEO_EPS = 1e-8


def koleo_loss(u: torch.Tensor, eps: float = KOLEO_EPS) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regularizer (Sablayrolles et al. 2019; Harun et al. ICML 2025).

    ``L_ent = -(1/B) sum_i log(||u_i - u_nn(i)||_2 + eps)`` with nn(i) the nearest *other* sample
    of the batch. ``u`` must already be L2-normalized (see :func:`entropy_term`). Half precision
    inputs are computed in float32.
    """
    u = u.flatten(1)
    if u.dtype in (torch.float16, torch.bfloat16):
        u = u.float()
    b = u.shape[0]
    if b < 2:
        return u.sum() * 0.0  # no neighbour: contributes nothing (keeps the graph)
    # exact pairwise distances (not the matmul shortcut, which loses precision for close pairs)
    d = torch.cdist(u, u, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
    d = d.masked_fill(torch.eye(b, dtype=torch.bool, device=u.device), float("inf"))
    nn_dist = d.min(dim=1).values
    return -torch.log(nn_dist + eps).mean()


def entropy_term(h: torch.Tensor) -> torch.Tensor:
    """KoLeo loss on the L2-normalized encoder embedding ``u = h / ||h||``."""
    h = h.flatten(1)
    if h.dtype in (torch.float16, torch.bfloat16):
        h = h.float()
    return koleo_loss(F.normalize(h, p=2.0, dim=1))


def default_label_smoothing(mode: str) -> float:
    """0.1 for the ETF modes (Harun et al.), 0 otherwise."""
    return 0.1 if check_mode(mode) in ETF_MODES else 0.0


class NCLoss(torch.nn.Module):
    """``CE(logits, y; label_smoothing) + alpha * L_ent(h)``; the entropy term only in entropy modes."""

    def __init__(self, mode: str, alpha: float = 0.05, label_smoothing: float | None = None):
        super().__init__()
        self.mode = check_mode(mode)
        self.alpha = float(alpha) if mode in ENTROPY_MODES else 0.0
        self.label_smoothing = default_label_smoothing(mode) if label_smoothing is None else float(label_smoothing)

    def forward(self, logits: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        if self.alpha:
            loss = loss + self.alpha * entropy_term(h)
        return loss
