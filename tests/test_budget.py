"""The memory budget: parsing sizes, where the budget comes from, the one-line refusal."""

from __future__ import annotations

import numpy as np
import pytest

import ncprobe.budget as budget
from ncprobe.errors import NcprobeError


@pytest.mark.parametrize("text,want", [
    ("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", int(1.5 * 2**30)), ("64k", 64 * 1024),
    ("2TB", 2 * 2**40), ("1000", 1000), (4096, 4096), (" 3 g ", 3 * 2**30),
])
def test_parse_bytes(text, want):
    assert budget.parse_bytes(text) == want


@pytest.mark.parametrize("bad", ["", "lots", "8X", "-1G", "0", True, "1e"])
def test_parse_bytes_refuses_in_one_line(bad):
    with pytest.raises(NcprobeError) as err:
        budget.parse_bytes(bad)
    assert "\n" not in str(err.value)


def test_format_bytes_binary_units():
    assert budget.format_bytes(512) == "512 B"
    assert budget.format_bytes(3 * 2**20 // 2) == f"{1.5:.1f} MiB"
    assert budget.format_bytes(1000 * 2048**2 * 8) == f"{1000 * 2048**2 * 8 / 2**30:.1f} GiB"


def test_budget_sources_in_order(monkeypatch):
    monkeypatch.delenv(budget.ENV_VAR, raising=False)
    monkeypatch.setattr(budget, "available_memory", lambda: 10_000_001)
    assert budget.memory_budget() == 10_000_001 // 2
    assert budget.memory_budget_source() == "half the available memory"
    monkeypatch.setenv(budget.ENV_VAR, "3M")
    assert budget.memory_budget() == 3 * 2**20
    with budget.using_memory_budget("1K"):
        assert budget.memory_budget() == 1024
        assert budget.memory_budget_source() == "set for this run"
    assert budget.memory_budget() == 3 * 2**20  # restored
    budget.set_memory_budget(2048)
    try:
        assert budget.memory_budget() == 2048
    finally:
        budget.set_memory_budget(None)
    monkeypatch.setenv(budget.ENV_VAR, "plenty")
    with pytest.raises(NcprobeError, match=budget.ENV_VAR):
        budget.memory_budget()


def test_available_memory_is_positive_and_at_most_physical():
    import os

    avail = budget.available_memory()
    assert avail > 0
    if hasattr(os, "sysconf"):
        assert avail <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_check_memory_one_line():
    with budget.using_memory_budget("1M"):
        budget.check_memory(2**20, "x", "y")  # exactly the budget: fine
        with pytest.raises(NcprobeError) as err:
            budget.check_memory(2**20 + 1, "the thing", "use less")
    msg = str(err.value)
    assert "\n" not in msg and "the thing" in msg and "use less" in msg and "1.0 MiB" in msg


def test_a_scorer_that_copies_the_fit_matrix_refuses_beyond_the_budget():
    """ViM reads the whole fit matrix as float64: over the budget it says so in one line, before copying."""
    from ncprobe.budget import using_memory_budget
    from ncprobe.errors import ScoringError
    from ncprobe.scores import get_scorer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 32)).astype(np.float32)  # a float64 copy: 400 * 32 * 8 = 102400 bytes
    w, b = rng.standard_normal((5, 32)), np.zeros(5)
    with using_memory_budget(100_000), pytest.raises(ScoringError, match=r"vim's fit \(400 x 32 float64\)") as info:
        get_scorer("vim").fit(x, head=(w, b))
    assert "\n" not in str(info.value) and "mahalanobis" in str(info.value)
    with using_memory_budget(110_000):
        get_scorer("vim").fit(x, head=(w, b))  # just fits


def test_a_malformed_memory_budget_flag_is_one_line_naming_the_flag(capsys):
    from tests.helpers import run_main

    code, _, err = run_main(["layers", "x.pt", "--id", "digits", "--ood", "noise:gaussian", "--memory-budget", "lots"],
                            capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: --memory-budget: memory size must be bytes or a size like 8G or 512M, got 'lots'"]
