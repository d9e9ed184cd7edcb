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
