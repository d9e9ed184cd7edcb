"""Shared checks for the architecture-family tests (tests/test_models_*.py).

A family test builds a member from its own definition with random weights, saves its state_dict in
the layouts real checkpoints come in, and checks that ``load_checkpoint(path)`` -- no arch, no
class count -- names the right architecture and class count and gives the reference model's logits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.infer import infer_arch
from ncprobe.models import get_arch
from ncprobe.models.introspect import build_on_meta

# plain state_dict, the usual wrappers, a DataParallel prefix, safetensors
LAYOUTS = ("plain", "state_dict", "net", "model", "module", "safetensors")
ATOL = 1e-5


def build(arch: str, num_classes: int, seed: int = 0) -> nn.Module:
    """A member with random weights and non-trivial normalization statistics, in eval mode.

    Random BN running stats and affine parameters make a forgotten or misplaced buffer change the
    logits; LayerNorm affine parameters and layer scales are perturbed for the same reason.
    """
    torch.manual_seed(seed)
    return randomize(get_arch(arch).builder(num_classes=num_classes), seed)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics/affine, LayerNorm affine, layer scales and class tokens; eval mode."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith(("layer_scale", "class_token")):  # initialized to ~0: would hide a swap
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def batch(input_size=(3, 32, 32), n: int = 2, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, *input_size, generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def save(model: nn.Module, directory: Path, layout: str) -> Path:
    """``model.state_dict()`` saved in one of :data:`LAYOUTS`."""
    sd = model.state_dict()
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = Path(directory) / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path
    path = Path(directory) / f"{layout}.pt"
    if layout == "plain":
        obj = sd
    elif layout == "module":
        obj = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    else:
        obj = {layout: sd, "epoch": 3, "best_acc": 0.5}
    torch.save(obj, path)
    return path


def check_load(path: Path, arch: str, num_classes: int, ref: nn.Module, x: torch.Tensor, **kwargs):
    """load_checkpoint(path) with no arch: the right name and classes, the reference logits."""
    ckpt = load_checkpoint(path, **kwargs)
    assert ckpt.arch == arch, f"{path.name}: inferred {ckpt.arch}, expected {arch}"
    assert ckpt.origin["arch"] == "inferred"
    assert ckpt.num_classes == num_classes and ckpt.origin["num_classes"] == "inferred"
    spec = get_arch(arch)
    assert ckpt.head_name == spec.head and ckpt.probe_layers == list(spec.probe_layers)
    assert tuple(ckpt.input_size) == tuple(spec.input_size)
    assert not ckpt.model.training
    want, got = logits(ref, x), logits(ckpt.model, x)
    assert got.shape == (x.shape[0], num_classes)
    diff = (want - got).abs().max().item()
    assert diff <= ATOL, f"{path.name}: logits differ by {diff}"
    return ckpt


def check_all_layouts(tmp_path: Path, arch: str, num_classes: int, layouts=LAYOUTS, n: int = 2, seed: int = 0,
                      model: nn.Module | None = None, input_size=None):
    """Save ``model`` (default: a random member of ``arch``) in each layout and check each load."""
    model = build(arch, num_classes, seed) if model is None else model.eval()
    x = batch(input_size or get_arch(arch).input_size, n)
    out = []
    for layout in layouts:
        d = tmp_path / layout
        d.mkdir(exist_ok=True)
        out.append(check_load(save(model, d, layout), arch, num_classes, model, x))
    return out


def inferred_on_meta(arch: str, num_classes: int, builder_name: str | None = None):
    """infer_arch on the state_dict of a meta-device build (shapes only, no memory)."""
    spec = get_arch(builder_name or arch)
    model = build_on_meta(spec.builder, num_classes=num_classes)
    return infer_arch(model.state_dict())


def check_probe_layers(arch: str, num_classes: int = 10, channels_last: bool = False):
    """Default probes: >= 3, in module order, all fire, and the spatial size never grows (meta forward)."""
    spec = get_arch(arch)
    assert len(spec.probe_layers) >= 3
    model = build_on_meta(spec.builder, num_classes=num_classes)
    names = [n for n, _ in model.named_modules()]
    assert [p for p in names if p in spec.probe_layers] == list(spec.probe_layers)
    assert spec.head in names and isinstance(model.get_submodule(spec.head), nn.Linear)
    assert model.get_submodule(spec.head).out_features == num_classes
    seen = {}
    hooks = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, tuple(o.shape)))
             for p in spec.probe_layers]
    with torch.no_grad():
        out = model(torch.empty(1, *spec.input_size, device="meta"))
    for h in hooks:
        h.remove()
    assert tuple(out.shape) == (1, num_classes)
    assert list(seen) == list(spec.probe_layers)
    sides = [s[1] if channels_last else s[-1] for s in seen.values() if len(s) == 4]
    assert sides == sorted(sides, reverse=True)
    return seen


def check_torchscript(tmp_path: Path, arch: str, num_classes: int, mode: str = "script", n: int = 2,
                      model: nn.Module | None = None, input_size=None):
    """Save a scripted (or traced) model; return (LoadedCheckpoint, max |logit difference|)."""
    model = build(arch, num_classes) if model is None else model.eval()
    x = batch(input_size or get_arch(arch).input_size, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model) if mode == "script" else torch.jit.trace(model, x[:1])
        path = tmp_path / f"{mode}.pt"
        torch.jit.save(scripted, str(path))
    ckpt = load_checkpoint(path)
    diff = (logits(model, x) - logits(ckpt.model, x)).abs().max().item()
    return ckpt, diff


def duplicate_head_state_dict(model: nn.Module, head: str, alias: str) -> dict:
    """The state_dict of ``model`` with its head module registered a second time under ``alias``
    (``self.classifier = self.fc``): the same tensors appear under two key prefixes."""
    parent_name, _, _ = alias.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, alias.rpartition(".")[2], model.get_submodule(head))
    sd = model.state_dict()
    assert f"{alias}.weight" in sd and sd[f"{alias}.weight"].data_ptr() == sd[f"{head}.weight"].data_ptr()
    return sd
