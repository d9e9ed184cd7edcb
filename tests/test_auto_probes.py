"""Per-layer probes for any model: stage boundaries where the spatial size drops, when the model's
top-level children would give fewer than three probe points."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.describe import layer_shapes
from ncprobe.models.introspect import probe_layers_for_model, spatial_stages


class FeaturesNet(nn.Module):
    """VGG-like: every conv block inside one `features` Sequential, three resolutions."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def test_stages_are_the_last_module_of_each_resolution():
    model = FeaturesNet().eval()
    # 32x32: features.0-1; 16x16: features.2-4; 8x8: features.5-7; 1x1 (global pool, skipped): features.8
    assert spatial_stages(model, (3, 32, 32), "classifier") == ["features.1", "features.4", "features.7"]
    assert probe_layers_for_model(model, "classifier", (3, 32, 32)) == ["features.1", "features.4", "features.7"]


def test_a_model_with_enough_top_level_stages_keeps_them():
    from ncprobe.models import create_model

    model = create_model("cifar_resnet20")
    assert probe_layers_for_model(model, "linear", (3, 32, 32)) == ["layer1", "layer2", "layer3"]


def test_a_whole_pickled_model_gets_stage_probes_and_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = FeaturesNet().eval()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    ckpt = load_checkpoint(path, trust_pickle=True)
    assert ckpt.probe_layers == ["features.1", "features.4", "features.7"]
    shapes = layer_shapes(ckpt)
    assert shapes["features.1"] == (8, 32, 32) and shapes["features.7"] == (32, 8, 8)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(ckpt.model(x).numpy(), model(x).numpy(), atol=1e-6)


def test_a_user_class_gets_stage_probes(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                                      nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1))\n"
        "        self.fc = nn.Linear(8, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.flatten(self.features(x), 1))\n"
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("mynet_ref", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.Net(num_classes=4).state_dict(), tmp_path / "w.pt")
    ckpt = load_checkpoint(tmp_path / "w.pt", arch=f"{src}:Net")
    assert len(ckpt.probe_layers) >= 3 and ckpt.probe_layers[0] == "features.1"
