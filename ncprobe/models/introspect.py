"""Reading a network whose layout ncprobe does not know in advance: its head, its probe points, its
input size, and building it on the meta device (no memory, no init cost)."""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# Top-level children that are never probe points of their own (stems and classifiers).
_NOT_PROBES = {"stem", "conv1", "bn1", "act1", "patch_embed", "head", "fc", "classifier", "linear", "norm", "pool"}


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, torch.jit.ScriptModule) and getattr(module, "original_name", "") == "Linear"


def find_head(model: nn.Module) -> str | None:
    """Dotted name of the last Linear(-like) module in registration order, or None."""
    head = None
    for name, module in model.named_modules():
        if name and _is_linear(module):
            head = name
    return head


def module_name(model: nn.Module, target: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def _has_children(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is not None


def _has_params(module: nn.Module) -> bool:
    return next(iter(module.parameters()), None) is not None


def default_probe_layers(model: nn.Module, head: str | None) -> list[str]:
    """Top-level containers with parameters, stem to head, excluding stem and head modules.

    A model that wraps everything in one child (``self.net = ...``) is looked into. A flat model
    (e.g. an ``nn.Sequential`` of layers) gets its parametrized top-level layers except the head.
    """
    prefix, root = "", model
    head_parts = (head or "").split(".")
    while True:
        kids = [(n, m) for n, m in root.named_children() if _has_params(m)]
        if len(kids) == 1 and _has_children(kids[0][1]) and head_parts[:1] == [kids[0][0]]:
            prefix, root = f"{prefix}{kids[0][0]}.", kids[0][1]
            head_parts = head_parts[1:]
            continue
        break
    head_top = head_parts[0] if head_parts and head_parts[0] else None
    children = list(root.named_children())
    containers = [
        f"{prefix}{n}"
        for n, m in children
        if n != head_top and n not in _NOT_PROBES and _has_children(m) and _has_params(m)
    ]
    if containers:
        return containers
    return [f"{prefix}{n}" for n, m in children if n != head_top and _has_params(m)]


def guess_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) from the first convolution: a strided large-kernel stem (7x7/2, patch embedding)
    means ImageNet-style 224 inputs, a 3x3 stride-1 stem means CIFAR-style 32."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            k, s = module.kernel_size[0], module.stride[0]
            side = 224 if (k >= 4 and s >= 2) else 32
            return (module.in_channels, side, side)
    return (3, 224, 224)


class _SkipMetaInit(TorchFunctionMode):
    """Skips in-place ops (weight init: normal_, uniform_, zero_, ...) on meta tensors: they
    compute nothing there, yet the first one costs seconds (it imports torch's compiler stack)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if (
            name.endswith("_")
            and not name.endswith("__")
            and args
            and isinstance(args[0], torch.Tensor)
            and args[0].is_meta
        ):
            return args[0]
        return func(*args, **(kwargs or {}))


def build_on_meta(builder, **kwargs) -> nn.Module:
    """Instantiate on the meta device (no memory, no init cost); falls back to CPU."""
    try:
        with torch.device("meta"), _SkipMetaInit():
            return builder(**kwargs)
    except Exception:
        return builder(**kwargs)  # some code cannot run on meta; a real error surfaces here


def spatial_stages(model: nn.Module, input_size, head: str | None = None) -> list[str]:
    """Stage boundaries found by running one zero image of ``input_size`` (C, H, W) through
    ``model`` (on the meta device when its parameters are there): the outputs where each spatial
    resolution ends, so a network whose blocks all sit inside one ``features`` Sequential (VGG,
    DenseNet, many custom nets) still gets one probe point per stage.

    Within each run of modules with the same output H x W (in execution order), the shallowest
    module is taken, the last one to finish when several are equally shallow; modules inside the head,
    1x1 maps (global pooling) and maps larger than an earlier one (up-sampling) are ignored. Returns [] when the forward pass fails (e.g. the guessed input size is wrong).
    """
    head_prefix = f"{head}." if head else None
    records: list[tuple[str, tuple[int, int]]] = []
    hooks = []

    def hook(name):
        def fn(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                records.append((name, tuple(output.shape[-2:])))
        return fn

    try:
        for name, module in model.named_modules():
            if not name or name == head or (head_prefix and name.startswith(head_prefix)):
                continue
            hooks.append(module.register_forward_hook(hook(name)))
    except RuntimeError:  # TorchScript modules take no hooks
        for h in hooks:
            h.remove()
        return []
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *tuple(input_size), device=device))
    except Exception:  # noqa: BLE001 - a model we cannot run here simply gets no automatic stages
        return []
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    stages: list[str] = []
    i = 0
    smallest = None
    while i < len(records):
        j = i
        while j + 1 < len(records) and records[j + 1][1] == records[i][1]:
            j += 1
        segment = records[i : j + 1]
        h, w = records[i][1]
        i = j + 1
        # a 1x1 map is a globally pooled vector (the penultimate feature's job); a map larger than an
        # earlier one is an up-sampling (e.g. VGG's adaptive pool to 7x7), not a stage
        if h * w <= 1 or (smallest is not None and h * w > smallest):
            continue
        smallest = h * w
        depth = min(name.count(".") for name, _ in segment)
        chosen = [name for name, _ in segment if name.count(".") == depth][-1]
        if chosen not in stages:
            stages.append(chosen)
    return stages


def probe_layers_for_model(model: nn.Module, head: str | None, input_size, minimum: int = 3) -> list[str]:
    """The default probe points of a model ncprobe does not know: its top-level parametrized
    containers (:func:`default_probe_layers`) or, when those are fewer than ``minimum``, the stage
    boundaries of :func:`spatial_stages` when they give more."""
    plain = default_probe_layers(model, head)
    if len(plain) >= minimum:
        return plain
    stages = spatial_stages(model, input_size, head)
    return stages if len(stages) > len(plain) else plain
