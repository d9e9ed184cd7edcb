"""`ncprobe leaderboard trajectory.csv --below X`: the epoch at which each recipe's NC1 first drops
below X, checked against a hand computation over a made-up trajectory."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from tests.helpers import run_main


def _trajectory(path):
    rng = np.random.default_rng(0)
    rows = []
    for recipe, rate in (("ce:aaaa", 0.5), ("l2:bbbb", 0.8)):
        for seed in range(3):
            for epoch in range(1, 11):
                for layer in ("block1", "penultimate"):
                    nc1 = 5.0 * rate ** epoch * (1 + 0.05 * rng.standard_normal()) * (3 if layer == "block1" else 1)
                    rows.append({"run_id": f"{recipe}-{seed}", "checkpoint": f"m{seed}", "recipe": recipe, "group": "",
                                 "seed": seed, "epoch": epoch, "step": epoch, "layer": layer, "metric": "nc1",
                                 "scorer": "", "ood": "", "value": nc1})
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def _run(args, capsys):
    return run_main(args, capsys)


def test_first_epoch_below_per_recipe_matches_a_hand_computation(tmp_path, capsys):
    table = _trajectory(tmp_path / "trajectory.csv")
    code, out, err = _run(["leaderboard", str(tmp_path / "trajectory.csv"), "--below", "0.5", "--format", "csv"], capsys)
    assert code == 0, err
    title, body = out.split("\n", 1)
    assert "nc1" in title and "penultimate" in title and "0.5" in title
    got = pd.read_csv(io.StringIO(body)).set_index("recipe")
    pen = table[table.layer == "penultimate"]
    for recipe, rows in pen.groupby("recipe"):
        firsts = np.array([g[g.value < 0.5]["epoch"].min() for _, g in rows.groupby("run_id")], dtype=float)
        assert got.loc[recipe, "runs"] == 3 and got.loc[recipe, "reached"] == np.isfinite(firsts).sum()
        if np.isfinite(firsts).any():  # the mean is over the runs that got there
            assert got.loc[recipe, [c for c in got.columns if "mean" in c][0]] == pytest.approx(np.nanmean(firsts))
    assert got.filter(like="mean").iloc[:, 0]["ce:aaaa"] < got.filter(like="mean").iloc[:, 0]["l2:bbbb"]


def test_trajectory_without_below_and_ood_csv_columns_are_one_line_errors(tmp_path, capsys):
    _trajectory(tmp_path / "trajectory.csv")
    code, _, err = _run(["leaderboard", str(tmp_path / "trajectory.csv")], capsys)
    assert code == 2 and "--below" in err and len(err.strip().splitlines()) == 1
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "other.csv", index=False)
    code, _, err = _run(["leaderboard", str(tmp_path / "other.csv"), "--below", "0.3"], capsys)
    assert code == 2 and "lacks the columns" in err
    code, _, err = _run(["leaderboard", str(tmp_path / "trajectory.csv"), "--below", "0.3", "--by", "nope"], capsys)
    assert code == 2 and "not a column" in err
