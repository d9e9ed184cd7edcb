"""TorchScript archives of unknown architectures: a scripted ``nn.Sequential`` rebuilt as an eager
one, so that forward hooks (and so per-layer probes) work on it."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class _ScriptedLayer(nn.Module):
    """An eager shell around one TorchScript submodule, so forward hooks work on it."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def eager_from_scripted(module: torch.jit.ScriptModule) -> nn.Module:
    """A scripted ``nn.Sequential`` as an eager Sequential (Linear children become real Linears)."""
    if getattr(module, "original_name", "") != "Sequential":
        return module
    layers = []
    for name, child in module.named_children():
        if getattr(child, "original_name", "") == "Linear":
            w = child.weight.detach()
            b = getattr(child, "bias", None)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            with torch.no_grad():
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b.detach())
            layers.append((name, lin))
        else:
            layers.append((name, _ScriptedLayer(child)))
    return nn.Sequential(OrderedDict(layers))
