"""CSV appends, the leaderboard's aggregation and table rendering."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest

from ncprobe.errors import NcprobeError
from ncprobe.report.csvlog import append_rows
from ncprobe.report.leaderboard import leaderboard
from ncprobe.report.tables import render


def _append_worker(args):
    path, worker = args
    for i in range(20):
        append_rows(path, pd.DataFrame({"worker": [worker] * 3, "i": [i] * 3, "v": np.arange(3.0)}))


def test_append_creates_then_appends(tmp_path):
    path = tmp_path / "t.csv"
    append_rows(path, pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    append_rows(path, pd.DataFrame({"a": [3], "b": ["z"]}))
    df = pd.read_csv(path)
    assert df["a"].tolist() == [1, 2, 3] and df["b"].tolist() == ["x", "y", "z"]


def test_append_with_new_columns_keeps_old_rows(tmp_path):
    path = tmp_path / "t.csv"
    append_rows(path, pd.DataFrame({"a": [1]}))
    append_rows(path, pd.DataFrame({"a": [2], "c": [5.0]}))
    df = pd.read_csv(path)
    assert df.columns.tolist() == ["a", "c"]
    assert df["a"].tolist() == [1, 2] and np.isnan(df["c"][0]) and df["c"][1] == 5.0


def test_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "t.csv"
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_append_worker, [(path, 0), (path, 1), (path, 2), (path, 3)])
    df = pd.read_csv(path)
    assert len(df) == 4 * 20 * 3
    assert sorted(df.groupby(["worker", "i"]).size().unique()) == [3]


def _fake_runs():
    rows = []
    rng = np.random.default_rng(0)
    for run, group in [("r1", "ce"), ("r2", "ce"), ("r3", "l2")]:
        for layer in ["layer1", "penultimate"]:
            for ood in ["a", "b"]:
                rows.append({"run_id": run, "checkpoint": f"m-{run}", "group": group, "ood": ood, "layer": layer,
                             "scorer": "gda", "auroc": rng.uniform(0.5, 1), "fpr95": rng.uniform(0, 1),
                             "id_accuracy": 0.9})
        for ood in ["a", "b"]:
            rows.append({"run_id": run, "checkpoint": f"m-{run}", "group": group, "ood": ood, "layer": "logits",
                         "scorer": "energy", "auroc": rng.uniform(0.5, 1), "fpr95": rng.uniform(0, 1),
                         "id_accuracy": 0.9})
    return pd.DataFrame(rows)


def test_leaderboard_group_stats_match_pandas():
    df = _fake_runs()
    board = leaderboard(df, layer="best", group_by=["group"])
    per_layer = df.groupby(["run_id", "scorer", "layer"])["auroc"].mean()
    best = per_layer.groupby(["run_id", "scorer"]).max()
    groups = df.drop_duplicates("run_id").set_index("run_id")["group"]
    for row in board.itertuples():
        vals = best.xs(row.scorer, level="scorer")[[r for r, g in groups.items() if g == row.group]]
        assert row.runs == len(vals)
        assert row.auroc_mean == pytest.approx(vals.mean())
        assert row.auroc_worst == pytest.approx(vals.min())
        if len(vals) > 1:
            assert row.auroc_std == pytest.approx(vals.std(ddof=1))
    assert board["auroc_mean"].is_monotonic_decreasing
    assert board["rank"].tolist() == list(range(1, len(board) + 1))


def test_leaderboard_fixed_layer_and_errors():
    df = _fake_runs()
    board = leaderboard(df, layer="penultimate", group_by=["checkpoint"])
    gda = board[board["scorer"] == "gda"]
    assert set(gda["layer"]) == {"penultimate"}
    assert set(board[board["scorer"] == "energy"]["layer"]) == {"logits"}
    with pytest.raises(NcprobeError, match="layer"):
        leaderboard(df, layer="nope")
    with pytest.raises(NcprobeError, match="group by"):
        leaderboard(df, group_by=["nope"])


def test_render_formats():
    df = pd.DataFrame({"name": ["a", "bb"], "v": [0.5, float("nan")]})
    text = render(df)
    assert text.splitlines()[0].split() == ["name", "v"] and "0.500" in text and "-" in text.splitlines()[3]
    md = render(df, "markdown")
    assert md.splitlines()[0] == "| name | v |" and md.splitlines()[2] == "| a | 0.500 |"
    assert pd.read_csv(__import__("io").StringIO(render(df, "csv")))["name"].tolist() == ["a", "bb"]
