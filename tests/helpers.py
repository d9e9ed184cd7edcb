"""Small builders shared by tests: tiny models, checkpoints and data sources made on the spot."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ncprobe.checkpoint.loaded import LoadedCheckpoint
from ncprobe.data.source import DataSource


class TinyNet(nn.Module):
    """A user-defined model: two conv stages, pooling, a linear head named `head`."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.stage2(self.stage1(x))).flatten(1))


def make_checkpoint(model: nn.Module, head_name: str, probe_layers, size=16, sha="") -> LoadedCheckpoint:
    model.eval()
    head = model.get_submodule(head_name)
    return LoadedCheckpoint(model=model, arch=type(model).__name__, num_classes=head.out_features, head_name=head_name,
                            input_size=(3, size, size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), sha256=sha,
                            source="memory", name="tiny", probe_layers=list(probe_layers))


def make_source(n=40, size=16, classes=4, seed=0, name="toy") -> DataSource:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % classes
    return DataSource(name=name, spec=name, labels=labels.astype(np.int64), fingerprint=f"{name}-{seed}-{n}-{size}",
                      images=images)


def preprocess_like_ncprobe(images: np.ndarray, mean, std) -> torch.Tensor:
    """Independent reference for the model input: uint8 NHWC -> float NCHW normalized (same size)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255.0
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x - m) / s).float()


def assert_head_scorer_contract(name, x, y, w, b, z, *, atol=0.0):
    """The shared contract of a scorer that reads the classifier head: needs the head, not fitted
    before fit, finite float64 scores independent of the batch size, NaN rows counted, fit rows
    checked, widths checked, zero rows finite. ``z`` has 400 rows, ``x`` 300."""
    import numpy as np
    import pytest

    from ncprobe.errors import ScoringError
    from ncprobe.scores import get_scorer

    s = get_scorer(name)
    assert s.input == "features" and s.needs_head and not s.default and s.paper
    assert set(s.grid) <= set(s.get_params())
    with pytest.raises(ScoringError, match="head"):
        get_scorer(name).fit(x, y)
    with pytest.raises(ScoringError, match="not fitted"):
        s.score(z)
    s.fit(x, y, head=(w, b))
    out = s.score(z)
    assert out.dtype == np.float64 and out.shape == (len(z),) and np.isfinite(out).all()
    s.batch_size = 7
    np.testing.assert_allclose(s.score(z), out, rtol=1e-12, atol=atol)
    bad = z.copy()
    bad[[0, 9, 300]] = np.nan
    with pytest.raises(ScoringError, match=f"3 of {len(z)} rows"):
        s.score(bad)
    x_bad = x.copy()
    x_bad[4] = np.inf
    with pytest.raises(ScoringError, match=f"1 of {len(x)} rows of the fit features"):
        get_scorer(name).fit(x_bad, y, head=(w, b))
    with pytest.raises(ScoringError, match="width"):
        s.score(np.ones((2, z.shape[1] + 1)))
    assert np.isfinite(s.score(np.zeros((2, z.shape[1])))).all()  # zero rows stay finite


def head_problem(seed=0, n=300, d=16, c=5, spread=1.0, bias=None):
    """A head-scorer test problem: non-negative (post-ReLU-like) class-clustered fit features ``x``
    (n rows) with labels ``y``, a head (W, b) that classifies them well (``bias`` overrides b's
    scale), and ``z``: 200 ID rows then 200 OOD rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    means = np.abs(2.0 * rng.standard_normal((c, d)))

    def draw(m):
        y = rng.integers(0, c, m)
        return np.abs(means[y] + spread * rng.standard_normal((m, d))), y

    x, y = draw(n)
    w = means + 0.1 * rng.standard_normal((c, d))
    b = (-0.5 * (means**2).sum(1) + 0.1 * rng.standard_normal(c)) if bias is None else bias * rng.standard_normal(c)
    z, _ = draw(200)
    ood = np.abs(1.5 * rng.standard_normal((200, d)) + 1.0)
    return x, y, w, b, np.vstack([z, ood])


def run_main(args, capsys) -> tuple[int, str, str]:
    """Run the console entry point as a user would (one-line errors, exit codes):
    (exit code, stdout, stderr)."""
    import pytest

    from ncprobe.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err
