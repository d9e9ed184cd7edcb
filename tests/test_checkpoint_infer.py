"""Architecture inference from state_dict keys and shapes, and the errors when nothing fits."""

from __future__ import annotations

import pytest
import torch

from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.infer import infer_arch
from ncprobe.errors import CheckpointError
from ncprobe.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_registry")


def _save(tmp_path, name, num_classes, fname="model.pt"):
    torch.manual_seed(0)
    model = create_model(name, num_classes).eval()
    path = tmp_path / fname
    torch.save(model.state_dict(), path)
    return model, path


def _logits(model, size=(3, 32, 32)):
    x = torch.randn(3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(
    "arch, classes",
    [("cifar_resnet20", 7), ("cifar_resnet32", 10), ("resnet18_cifar", 5), ("wrn16_4", 3), ("wrn22_2", 12), ("small_cnn", 6)],
)
def test_inferred_with_no_flags(tmp_path, arch, classes):
    model, path = _save(tmp_path, arch, classes)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == arch and ckpt.origin["arch"] == "inferred"
    assert ckpt.num_classes == classes and ckpt.origin["num_classes"] == "inferred"
    assert ckpt.name == "model" and ckpt.origin["name"] == "file"
    assert torch.allclose(_logits(model), _logits(ckpt.model), atol=1e-6)


def test_inference_only_builds_the_depth_the_keys_say(tmp_path):
    """A ResNet-20 is identified from its block counts; deep family members are never built."""
    _, path = _save(tmp_path, "cifar_resnet20", 7)
    sd = torch.load(path, weights_only=True)
    result = infer_arch(sd)
    assert result.match.arch == "cifar_resnet20" and result.match.num_classes == 7
    assert not {"cifar_resnet1202", "cifar_resnet110", "resnet152_cifar", "wrn28_10"} & set(result.checked)


def test_head_called_fc_is_renamed_for_cifar_resnet18(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18_cifar", 4).eval()
    sd = {("fc." + k[len("linear.") :] if k.startswith("linear.") else k): v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "fc.pt")
    ckpt = load_checkpoint(tmp_path / "fc.pt")
    assert ckpt.arch == "resnet18_cifar" and ckpt.metadata["aliased_keys"] is True
    assert torch.allclose(_logits(model), _logits(ckpt.model), atol=1e-6)


def test_nothing_fits_names_closest_candidates(tmp_path):
    torch.manual_seed(0)
    sd = create_model("cifar_resnet20", 10).state_dict()
    sd.pop("layer3.2.bn2.weight")
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "odd.pt")
    msg = str(info.value)
    assert "matches no known architecture" in msg and "\n" not in msg
    assert "closest: cifar_resnet20 (1 missing key (e.g. 'layer3.2.bn2.weight'), 1 unexpected key (e.g. 'extra.weight'))" in msg
    assert "--arch" in msg


def test_unrelated_keys_say_so(tmp_path):
    torch.save({"enc.weight": torch.zeros(4, 4), "dec.bias": torch.zeros(4)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no registered architecture shares its key names"):
        load_checkpoint(tmp_path / "other.pt")


def test_explicit_arch_mismatch_is_one_line_with_counts_and_example(tmp_path):
    _, path = _save(tmp_path, "cifar_resnet20", 7)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, arch="cifar_resnet32")
    msg = str(info.value)
    # ResNet-32 has 5 blocks per stage, ResNet-20 three: 3 stages x 2 blocks x 10 tensors are missing
    assert "does not fit architecture cifar_resnet32 (from --arch): 60 missing keys (e.g. 'layer1.3.conv1.weight'), 0 unexpected keys" in msg
    assert "the file fits cifar_resnet20" in msg


def test_shape_mismatch_is_reported(tmp_path):
    _, path = _save(tmp_path, "wrn16_2", 10)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*file \(32, 16, 3, 3\) vs model \(64, 16, 3, 3\)"):
        load_checkpoint(path, arch="wrn16_4")


def test_num_classes_flag_contradicting_the_head(tmp_path):
    _, path = _save(tmp_path, "cifar_resnet20", 7)
    with pytest.raises(CheckpointError, match=r"has 7 classes \(linear.weight \(7, 64\)\) but --num-classes says 10"):
        load_checkpoint(path, num_classes=10)
    assert load_checkpoint(path, num_classes=7).origin["num_classes"] == "flag"


def test_explicit_arch_pattern_name(tmp_path):
    model, path = _save(tmp_path, "wrn22_2", 10)
    ckpt = load_checkpoint(path, arch="wrn22_2")
    assert ckpt.origin["arch"] == "flag" and ckpt.probe_layers == ["layer1", "layer2", "layer3"]
    assert torch.allclose(_logits(model), _logits(ckpt.model), atol=1e-6)


def test_spectral_norm_keys_get_a_hint(tmp_path):
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", 10)
    torch.nn.utils.spectral_norm(model.conv1)
    torch.save(model.state_dict(), tmp_path / "sn.pt")
    with pytest.raises(CheckpointError, match="spectral normalization"):
        load_checkpoint(tmp_path / "sn.pt")


def test_profiler_counters_are_ignored(tmp_path):
    """thop leaves total_ops/total_params buffers in state_dicts; they are not weights."""
    model, path = _save(tmp_path, "cifar_resnet20", 4)
    sd = model.state_dict()
    sd["total_ops"] = torch.zeros(1, dtype=torch.float64)
    sd["layer1.0.conv1.total_params"] = torch.zeros(1, dtype=torch.float64)
    torch.save(sd, path)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "cifar_resnet20" and torch.allclose(_logits(model), _logits(ckpt.model), atol=1e-6)
