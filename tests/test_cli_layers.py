"""End to end through the CLI on data made here: layers, collapse, eval, leaderboard, and their errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ncprobe.api import COLLAPSE_COLUMNS, OOD_COLUMNS
from ncprobe.cli import main

ID = "digits:test@classes=0-3"
FIT = "digits:train@classes=0-3"
OODS = ["near=digits:test@classes=6-9", "noise=noise:gaussian@n=60,size=16"]




def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def run_ok(args, capsys):
    try:
        main([str(a) for a in args])
    except SystemExit as exc:  # click may exit 0 explicitly
        assert exc.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def test_layers_end_to_end_then_cached(small_ckpt, tmp_path, capsys):
    out = tmp_path / "runs"
    cache = tmp_path / "cache"
    args = ["layers", small_ckpt, "--id", ID, "--fit", FIT, "--out", out, "--cache", cache, "-q",
            "--scorers", "gda,mahalanobis,knn,energy,msp,vim", "--knn-k", "5"]
    for o in OODS:
        args += ["--ood", o]
    text = run_ok(args, capsys)
    assert "Per layer" in text and "penultimate" in text and "gda" in text
    ood = pd.read_csv(out / "ood.csv")
    assert list(ood.columns) == OOD_COLUMNS
    assert set(ood["ood"]) == {"near", "noise"}
    assert set(ood.loc[ood.scorer == "energy", "layer"]) == {"logits"}
    assert set(ood.loc[ood.scorer == "vim", "layer"]) == {"penultimate"}
    gda_layers = set(ood.loc[ood.scorer == "gda", "layer"])
    assert {"penultimate", "block1"} <= gda_layers and "logits" not in gda_layers
    assert ood["auroc"].between(0, 1).all() and ood["fpr95"].between(0, 1).all()
    assert ood["run_id"].nunique() == 1 and (ood["n_ood"] > 0).all()
    collapse = pd.read_csv(out / "collapse.csv")
    assert list(collapse.columns) == COLLAPSE_COLUMNS
    pen = collapse.set_index("layer").loc["penultimate"]
    assert np.isfinite(pen["nc3"]) and np.isfinite(pen["nc4"]) and pen["classes"] == 4
    assert np.isnan(collapse.set_index("layer").loc["block1", "nc3"])
    assert list(out.glob("*.png"))
    # second run: every set from the cache, rows appended under a new run id
    text = run_ok(args, capsys)
    assert "all served from the cache" in text
    assert pd.read_csv(out / "ood.csv")["run_id"].nunique() == 2
    board = run_ok(["leaderboard", out / "ood.csv", "--format", "csv"], capsys)
    table = pd.read_csv(__import__("io").StringIO(board))
    assert {"rank", "scorer", "auroc_mean", "auroc_worst", "runs"} <= set(table.columns)
    assert (table["runs"] == 1).all()  # the same checkpoint on the same sets again: an identical rerun, counted once


def test_scorers_all_runs_every_registered_scorer_and_the_default_set_is_the_registrys(small_ckpt, tmp_path, capsys):
    from ncprobe.scores import default_scorers, list_scorers

    base = ["layers", small_ckpt, "--id", ID, "--fit", FIT, "--ood", OODS[1], "--no-cache", "-q", "--no-plot"]
    run_ok(base + ["--out", tmp_path / "all", "--scorers", "all"], capsys)
    ood = pd.read_csv(tmp_path / "all" / "ood.csv")
    assert set(ood["scorer"]) == set(list_scorers())  # every scorer applies somewhere on a linear-head CNN
    assert ood["auroc"].notna().all()
    run_ok(base + ["--out", tmp_path / "default"], capsys)
    default = pd.read_csv(tmp_path / "default" / "ood.csv")
    assert set(default["scorer"]) == set(default_scorers())
    for _layer, part in default.groupby("layer"):  # within a layer, scorers come in the registry's order
        assert list(dict.fromkeys(part["scorer"])) == [n for n in default_scorers() if n in set(part["scorer"])]
    help_text = run_ok(["layers", "--help"], capsys)
    assert all(name in " ".join(help_text.split()) for name in list_scorers())


def test_scorer_params_are_applied_and_recorded(small_ckpt, tmp_path, capsys):
    base = ["layers", small_ckpt, "--id", ID, "--fit", FIT, "--ood", OODS[1], "--no-cache", "-q", "--no-plot",
            "--scorers", "knn,energy,vim"]
    run_ok(base + ["--out", tmp_path / "a", "--scorer-param", "knn.k=7", "--scorer-param", "energy.T=2"], capsys)
    run_ok(base + ["--out", tmp_path / "b", "--knn-k", "7"], capsys)
    a, b = pd.read_csv(tmp_path / "a" / "ood.csv"), pd.read_csv(tmp_path / "b" / "ood.csv")
    assert set(a.loc[a.scorer == "knn", "params"]) == {"k=7"} == set(b.loc[b.scorer == "knn", "params"])
    assert set(a.loc[a.scorer == "energy", "params"]) == {"T=2"}
    assert set(b.loc[b.scorer == "energy", "params"]) == {"T=1"}
    # ViM's dim=None is recorded as the dimension it resolved to (d // 2 for this small head)
    dim = int(b.loc[b.scorer == "vim", "dim"].iloc[0])
    assert set(b.loc[b.scorer == "vim", "params"]) == {f"dim={dim // 2}"}
    np.testing.assert_allclose(a.loc[a.scorer == "knn", "auroc"].to_numpy(), b.loc[b.scorer == "knn", "auroc"].to_numpy())
    for bad in (["--scorer-param", "knn.kk=3"], ["--scorer-param", "knn=3"]):
        code, _, err = run_cli(base + ["--out", tmp_path / "c"] + bad, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(base + ["--out", tmp_path / "c", "--scorer-param", "knn=3"], capsys)
    assert "--scorer-param" in err and "NAME.PARAM=VALUE" in err


def test_fit_split_and_collapse_and_eval(small_ckpt, tmp_path, capsys):
    out = tmp_path / "r"
    text = run_ok(["layers", small_ckpt, "--id", ID, "--fit-split", "0.5", "--ood", OODS[1], "--out", out,
                   "--no-cache", "-q", "--scorers", "gda,msp", "--no-plot"], capsys)
    ood = pd.read_csv(out / "ood.csv")
    assert ood["n_fit"].iloc[0] + ood["n_id"].iloc[0] == int(ood["n_fit"].iloc[0] + ood["n_id"].iloc[0])
    assert abs(ood["n_fit"].iloc[0] - ood["n_id"].iloc[0]) <= 4
    assert "Per layer" in text
    text = run_ok(["collapse", small_ckpt, "--data", FIT, "--out", out, "--no-cache", "-q"], capsys)
    assert "nc1" in text and "penultimate" in text
    text = run_ok(["eval", small_ckpt, "--data", ID, "--no-cache", "-q"], capsys)
    acc = float(text.strip().split("accuracy:")[1])
    assert 0.0 <= acc <= 1.0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["layers", "{ckpt}", "--id", ID, "--fit", FIT, "--ood", "{tmp}/empty.npz"], "empty"),
        (["layers", "{ckpt}", "--id", ID, "--fit", FIT], "--ood"),
        (["layers", "{ckpt}", "--id", ID, "--ood", "noise:gaussian", "--bogus"], "--bogus"),
        (["layers", "{ckpt}", "--id", "{tmp}/missing.npz", "--fit", FIT, "--ood", "noise:gaussian"], "missing.npz"),
        (["layers", "{ckpt}", "--id", "noise:gaussian", "--ood", "noise:uniform"], "fit"),
        (["layers", "{ckpt}", "--id", ID, "--fit", "digits:train", "--ood", "noise:gaussian"], "label"),
        (["layers", "{ckpt}", "--id", ID, "--fit", FIT, "--ood", "noise:gaussian", "--layers", "nope"], "nope"),
        (["layers", "{ckpt}", "--id", ID, "--fit", FIT, "--ood", "noise:gaussian", "--scorers", "nope"], "nope"),
        (["layers", "{ckpt}", "--id", ID, "--fit", FIT, "--ood", "noise:gaussian", "--scorers", ","], "--scorers"),
        (["layers", "{ckpt}", "--id", ID, "--fit", FIT, "--fit-split", "0.5", "--ood", "noise:gaussian"], "--fit-split"),
        (["layers", "{ckpt}", "--id", ID, "--fit", "{tmp}/single.npz", "--ood", "noise:gaussian"], "single sample"),
        (["leaderboard", "{tmp}/none.csv"], "none.csv"),
        (["eval", "{tmp}/missing.pt", "--data", ID], "missing.pt"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(small_ckpt, tmp_path, capsys, args, needle):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8, 3), np.uint8), y=np.zeros(0, np.int64))
    rng = np.random.default_rng(0)  # class 3 has one sample: GDA cannot fit its covariance
    np.savez(tmp_path / "single.npz", x=rng.integers(0, 255, (13, 8, 8, 3), dtype=np.uint8),
             y=np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]))
    args = [a.format(ckpt=small_ckpt, tmp=tmp_path) for a in args]
    code, out, err = run_cli(args + ["--no-cache", "-q"] if args[0] != "leaderboard" else args, capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in err


def test_console_script_no_traceback(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    proc = subprocess.run([sys.executable, "-m", "ncprobe", "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
