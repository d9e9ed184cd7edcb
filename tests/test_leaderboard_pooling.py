"""The leaderboard never pools what should not be pooled: two untagged checkpoints, identical
reruns and runs on different OOD sets are split or counted once, each with a note; near/far and
per-set columns and :func:`near_far_table` agree with means computed here from the per-set rows."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ncprobe.cli import cli
from ncprobe.report.leaderboard import leaderboard, near_far_table

SETS = (("near1", "near"), ("far1", "far"), ("far2", "far"))
LAYERS = ("layer1", "penultimate")


def runs_rows(run, *, checkpoint="m.pt", sha="aa11", group="", recipe="", sets=SETS, scorer="gda", params="",
              timestamp="2024-05-01T10:00:00+00:00", layers=LAYERS, seed=None) -> pd.DataFrame:
    """A hand-made run: one row per layer x OOD set, random AUROC / FPR95 seeded by the run's name."""
    rng = np.random.default_rng(seed if seed is not None else sum(map(ord, run + scorer)))
    rows = []
    for layer in layers:
        for name, kind in sets:
            rows.append({"run_id": run, "timestamp": timestamp, "checkpoint": checkpoint, "checkpoint_sha256": sha,
                         "group": group, "recipe": recipe, "id": "digits:test", "fit": "digits:train", "ood": name,
                         "ood_group": kind, "layer": layer, "scorer": scorer, "params": params,
                         "auroc": float(rng.uniform(0.3, 1.0)), "fpr95": float(rng.uniform(0.0, 1.0)),
                         "id_accuracy": 0.9})
    return pd.DataFrame(rows)


def best_per_run(df: pd.DataFrame) -> dict:
    """(run, scorer) -> the rows of its best layer (highest mean AUROC), found with plain loops."""
    out = {}
    for (run, scorer), part in df.groupby(["run_id", "scorer"]):
        means = {layer: np.mean(p["auroc"].to_numpy()) for layer, p in part.groupby("layer")}
        best = max(means, key=means.get)
        out[run, scorer] = part[part["layer"] == best]
    return out


def run_mean(rows: pd.DataFrame, metric="auroc", kind=None) -> float:
    sel = rows if kind is None else rows[rows["ood_group"] == kind]
    return float(np.mean(sel[metric].to_numpy()))


def test_two_untagged_checkpoints_are_split_with_a_note():
    df = pd.concat([runs_rows("r1", checkpoint="resnet20.th", sha="aa11"),
                    runs_rows("r2", checkpoint="resnet32.th", sha="bb22")])
    board = leaderboard(df, group_by=["group"])
    best = best_per_run(df)
    assert len(board) == 2 and (board["runs"] == 1).all()
    for row in board.itertuples():
        run = {"resnet20.th": "r1", "resnet32.th": "r2"}[row.checkpoint]
        assert row.auroc_mean == pytest.approx(run_mean(best[run, "gda"]))
    notes = board.attrs["notes"]
    assert len(notes) == 1 and "not pooled" in notes[0] and "resnet20.th" in notes[0] and "resnet32.th" in notes[0]
    assert "--group" in notes[0]


def test_same_name_different_hash_is_split_too():
    df = pd.concat([runs_rows("r1", sha="aa11"), runs_rows("r2", sha="bb22")])  # m.pt retrained in place
    board = leaderboard(df)  # default: checkpoint, group
    assert len(board) == 2 and sorted(board["checkpoint_sha256"]) == ["aa11", "bb22"]
    assert "2 different checkpoints" in board.attrs["notes"][0]


def test_identical_rerun_counts_once_keeping_the_latest():
    # r0 was written later than r9 (timestamps decide, not run ids)
    old = runs_rows("r9", timestamp="2024-05-01T10:00:00+00:00")
    new = runs_rows("r0", timestamp="2024-05-02T10:00:00+00:00")
    board = leaderboard(pd.concat([old, new]), group_by=["group"])
    assert board["runs"].tolist() == [1]
    assert board["auroc_mean"].iloc[0] == pytest.approx(run_mean(best_per_run(new)["r0", "gda"]))
    assert board["auroc_mean"].iloc[0] != pytest.approx(run_mean(best_per_run(old)["r9", "gda"]))
    (note,) = board.attrs["notes"]
    assert note.startswith("identical reruns counted once") and "the latest, r0, is kept" in note


def test_a_rerun_with_other_params_or_another_fit_set_is_not_a_duplicate():
    df = pd.concat([runs_rows("r1", params="k=50"), runs_rows("r2", params="k=10"),
                    runs_rows("r3", params="k=50").assign(fit="digits:other")])
    board = leaderboard(df, group_by=["group"])
    assert sorted(board["params"]) == ["k=10", "k=50"] and board["runs"].sum() == 3
    assert not any("identical reruns" in n for n in board.attrs["notes"])


def test_runs_on_disjoint_ood_sets_are_split_and_the_sets_named():
    a = runs_rows("r1", sets=(("near1", "near"), ("far1", "far")))
    b = runs_rows("r2", sets=(("far2", "far"), ("far3", "far")))
    board = leaderboard(pd.concat([a, b]), group_by=["group"])
    best = best_per_run(pd.concat([a, b]))
    by_sets = board.set_index("ood_sets")
    assert sorted(by_sets.index) == ["far1, near1", "far2, far3"] and (board["runs"] == 1).all()
    assert by_sets.loc["far1, near1", "auroc_mean"] == pytest.approx(run_mean(best["r1", "gda"]))
    assert by_sets.loc["far2, far3", "auroc_mean"] == pytest.approx(run_mean(best["r2", "gda"]))
    (note,) = board.attrs["notes"]
    assert "different OOD sets" in note and "[far1, near1] in r1" in note and "[far2, far3] in r2" in note


def test_a_named_group_pools_two_checkpoints():
    df = pd.concat([runs_rows("r1", checkpoint="s0.pt", sha="aa11", group="ce"),
                    runs_rows("r2", checkpoint="s1.pt", sha="bb22", group="ce")])
    board = leaderboard(df, group_by=["group"])
    best = best_per_run(df)
    vals = np.array([run_mean(best["r1", "gda"]), run_mean(best["r2", "gda"])])
    assert board["runs"].tolist() == [2] and board.attrs["notes"] == []
    assert board["auroc_mean"].iloc[0] == pytest.approx(vals.mean())
    assert board["auroc_std"].iloc[0] == pytest.approx(vals.std(ddof=1))
    assert board["auroc_worst"].iloc[0] == pytest.approx(vals.min())


def test_the_same_recipe_pools_and_different_recipes_do_not():
    same = pd.concat([runs_rows("r1", checkpoint="s0.pt", sha="aa11", recipe="ce:1f2e"),
                      runs_rows("r2", checkpoint="s1.pt", sha="bb22", recipe="ce:1f2e")])
    board = leaderboard(same, group_by=["group"])
    best = best_per_run(same)
    assert board["runs"].tolist() == [2] and board.attrs["notes"] == []
    assert board["auroc_mean"].iloc[0] == pytest.approx(np.mean([run_mean(best[r, "gda"]) for r in ("r1", "r2")]))
    other = same.assign(recipe=np.where(same["run_id"] == "r1", "ce:1f2e", "l2:9a9a"))
    split = leaderboard(other, group_by=["group"])
    assert len(split) == 2 and "not pooled" in split.attrs["notes"][0]


def test_near_far_and_per_set_columns_are_the_means_of_the_per_set_rows():
    df = pd.concat([runs_rows("r1", checkpoint="s0.pt", sha="aa11", group="ce"),
                    runs_rows("r2", checkpoint="s1.pt", sha="bb22", group="ce"),
                    runs_rows("r3", checkpoint="s2.pt", sha="cc33", group="l2")])
    board = leaderboard(df, group_by=["group"], per_set=True).set_index("group")
    best = best_per_run(df)
    for group, runs in {"ce": ["r1", "r2"], "l2": ["r3"]}.items():
        for metric in ("auroc", "fpr95"):
            for kind in ("near", "far"):
                expect = np.mean([run_mean(best[r, "gda"], metric, kind) for r in runs])
                assert board.loc[group, f"{metric}_{kind}"] == pytest.approx(expect)
        for name, _ in SETS:
            expect = np.mean([best[r, "gda"].set_index("ood").loc[name, "auroc"] for r in runs])
            assert board.loc[group, f"auroc[{name}]"] == pytest.approx(expect)


def test_no_near_far_columns_without_ood_groups():
    df = runs_rows("r1").assign(ood_group="").drop(columns=["recipe", "checkpoint_sha256", "timestamp"])
    board = leaderboard(df)  # an older ood.csv: the new columns are missing or empty
    assert not {"auroc_near", "auroc_far"} & set(board.columns)
    assert board["auroc_mean"].iloc[0] == pytest.approx(run_mean(best_per_run(df)["r1", "gda"]))


def test_near_far_table_against_the_per_set_rows():
    df = pd.concat([runs_rows("r1", checkpoint="s0.pt"), runs_rows("r2", checkpoint="s1.pt", sha="bb22"),
                    runs_rows("r1", scorer="energy", layers=("logits",))])
    table = near_far_table(df)
    best = best_per_run(df)
    assert len(table) == 3 * 2 and set(table["layer_choice"]) == {"best", "penultimate"}
    for row in table.itertuples():
        if row.layer_choice == "best":
            rows = best[row.run_id, row.scorer]
        else:
            part = df[(df["run_id"] == row.run_id) & (df["scorer"] == row.scorer)]
            want = "logits" if row.scorer == "energy" else "penultimate"
            rows = part[part["layer"] == want]
        assert row.layer == rows["layer"].iloc[0]
        assert row.auroc_near == pytest.approx(run_mean(rows, "auroc", "near"))
        assert row.auroc_far == pytest.approx(run_mean(rows, "auroc", "far"))
        assert row.fpr95_near == pytest.approx(run_mean(rows, "fpr95", "near"))
        assert row.fpr95_far == pytest.approx(run_mean(rows, "fpr95", "far"))
        assert row.auroc_mean == pytest.approx(run_mean(rows))
        assert (row.n_near, row.n_far) == (1, 2)
    assert set(table[table["scorer"] == "energy"]["layer"]) == {"logits"}


def test_cli_prints_the_notes_and_per_set_columns(tmp_path):
    path = tmp_path / "ood.csv"
    pd.concat([runs_rows("r1", checkpoint="resnet20.th", sha="aa11"),
               runs_rows("r2", checkpoint="resnet32.th", sha="bb22"),
               runs_rows("r3", checkpoint="resnet32.th", sha="bb22", timestamp="2024-05-03T00:00:00+00:00")]
              ).to_csv(path, index=False)
    result = CliRunner().invoke(cli, ["leaderboard", str(path), "--group-by", "group"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2
    assert any("identical reruns counted once" in n and "r3, is kept" in n for n in notes)
    assert any("not pooled" in n and "resnet20.th" in n for n in notes)
    result = CliRunner().invoke(cli, ["leaderboard", str(path), "--group-by", "group", "--format", "csv", "--per-set"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))  # csv on stdout stays a table: the notes go to stderr
    assert {"auroc[near1]", "auroc[far1]", "auroc[far2]", "auroc_near", "auroc_far", "ood_sets"} <= set(table.columns)
    assert sorted(table["runs"]) == [1, 1]
    assert sum(line.startswith("note: ") for line in result.stderr.splitlines()) == 2
