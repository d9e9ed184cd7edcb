"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data (real public data and checkpoints); skips the test when absent."""
    if not (SHARED_DATA / "PROVENANCE.md").exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Run with one torch thread: tiny models are fastest that way, and don't stall when other
    processes hold the cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def empty_registry(tmp_path, monkeypatch):
    """No checkpoints.yaml entries, so every fact comes from the file or from inference."""
    empty = tmp_path / "empty-registry.yaml"
    empty.write_text("checkpoints: []\n")
    monkeypatch.setenv("NCPROBE_REGISTRY", str(empty))
    return empty


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory) -> Path:
    """A randomly initialized small_cnn with 4 classes saved as a plain state_dict (seed 0)."""
    import torch

    from ncprobe.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    torch.save(create_model("small_cnn", num_classes=4).state_dict(), path)
    return path
