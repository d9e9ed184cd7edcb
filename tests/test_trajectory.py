"""Collapse over training: `finetune --track`, `--save-every`, `collapse A B ...` and curve comparison."""

from __future__ import annotations

import hashlib
import statistics

import numpy as np
import pandas as pd
import pytest
import torch

from ncprobe.finetune.train import finetune, resume_path
from ncprobe.report.csvlog import read_table

DIGITS = "digits:train@classes=0-5"
TRACK = "digits:train@classes=0-5,n=300,seed=0"
EPOCHS = 4
KW = dict(arch="small_cnn", data=DIGITS, mode="ce", epochs=EPOCHS, batch_size=32, flip=False, progress=False, seed=1)


def run_cli(args, capsys):
    """(exit code, stdout, stderr) of the console entry point."""
    from ncprobe.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tracked run through the CLI, a checkpoint kept after every epoch."""
    from click.testing import CliRunner

    from ncprobe.cli import cli

    root = tmp_path_factory.mktemp("tracked")
    out = root / "m.safetensors"
    res = CliRunner().invoke(cli, ["finetune", "--arch", "small_cnn", "--data", DIGITS, "--mode", "ce", "--epochs",
                                   str(EPOCHS), "--batch-size", "32", "--no-flip", "--seed", "1", "-q", "--track",
                                   "--track-n", "300", "--save-every", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"trajectory: {root / 'trajectory.csv'}" in res.output
    return root, out, read_table(root / "trajectory.csv")


def _nc1_reference(features: np.ndarray, labels: np.ndarray) -> float:
    """NC1 = Tr(Sigma_W Sigma_B^+) / C in float64, pseudo-inverse over the top C-1 eigenvalues (papers.md 4)."""
    h = features.astype(np.float64)
    classes = np.unique(labels)
    means = np.stack([h[labels == c].mean(0) for c in classes])
    centred = means - means.mean(0)
    sw = sum((h[labels == c] - means[i]).T @ (h[labels == c] - means[i]) for i, c in enumerate(classes)) / len(h)
    sb = centred.T @ centred / len(classes)
    lam, vec = np.linalg.eigh(sb)
    top = vec[:, -(len(classes) - 1):]
    sb_pinv = top @ np.diag(1.0 / lam[-(len(classes) - 1):]) @ top.T
    return float(np.trace(sw @ sb_pinv) / len(classes))


def test_track_writes_csv_and_plot_and_nc1_decreases(tracked):
    root, out, table = tracked
    nc1 = table[(table.metric == "nc1") & (table.layer == "penultimate")].sort_values("epoch")
    assert list(nc1.epoch) == list(range(1, EPOCHS + 1))
    assert table.run_id.nunique() == 1 and set(table.data) == {"digits@classes=0-5,n=300,seed=0"}
    assert set(table.n[table.metric == "nc1"]) == {300}
    values = nc1.value.to_numpy()
    assert values[-1] < 0.8 * values[0], values
    slope = np.polyfit(np.arange(len(values)), np.log(values), 1)[0]
    assert slope < 0, values  # a decreasing trend, not only the end points
    png = root / "m.trajectory.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert {"recipe", "mode", "seed", "checkpoint_sha256", "layer_index"} <= set(table.columns)
    assert set(table["mode"]) == {"ce"} and set(table.seed) == {1} and table.recipe.str.startswith("ce:").all()
    # the tracked NC1 at the last epoch is the NC1 of that checkpoint's penultimate features on the subset
    from ncprobe.checkpoint import load_checkpoint
    from ncprobe.data import load_dataset
    from ncprobe.features import extract_features

    last = root / f"m.epoch{EPOCHS:03d}.safetensors"
    ckpt = load_checkpoint(str(last))
    fs = extract_features(ckpt, load_dataset(TRACK, default_split="train"), use_cache=False, progress=False)
    ref = _nc1_reference(fs["penultimate"], fs.labels)
    assert values[-1] == pytest.approx(ref, rel=1e-6)
    assert nc1.checkpoint_sha256.iloc[-1] == hashlib.sha256(last.read_bytes()).hexdigest()


def test_collapse_over_saved_checkpoints_reproduces_tracking(tracked, capsys):
    root, out, tracked_rows = tracked
    files = [root / f"m.epoch{e:03d}.safetensors" for e in (3, 1, 4, 2)]  # shuffled: ordered by stored epoch
    code, stdout, err = run_cli(["collapse", *files, "--data", TRACK, "--out", root / "from_files", "--no-cache",
                                 "-q"], capsys)
    assert code == 0, err
    again = read_table(root / "from_files" / "trajectory.csv")
    assert list(again.drop_duplicates("step").epoch) == [1, 2, 3, 4] and list(again.drop_duplicates("step").step) == [1, 2, 3, 4]
    keys = ["epoch", "layer", "metric"]
    joined = tracked_rows.merge(again, on=keys, suffixes=("_t", "_c"), validate="one_to_one")
    assert len(joined) == len(tracked_rows) == len(again)
    np.testing.assert_allclose(joined.value_c, joined.value_t, rtol=0, atol=1e-9)
    assert (joined.checkpoint_sha256_c == joined.checkpoint_sha256_t).all()
    assert (joined.checkpoint_c == joined.checkpoint_t).all()
    collapse = read_table(root / "from_files" / "collapse.csv")
    assert sorted(collapse.epoch.unique()) == [1, 2, 3, 4]
    assert "m.epoch004" in stdout and len(list((root / "from_files").glob("*.trajectory.png"))) == 1
    # the same through a quoted glob
    code, stdout, err = run_cli(["collapse", str(root / "m.epoch*.safetensors"), "--data", TRACK, "--no-cache", "-q"],
                                capsys)
    assert code == 0, err
    lines = [ln.split() for ln in stdout.splitlines() if "m.epoch" in ln and "checkpoints" not in ln]
    assert [(int(ln[0]), ln[1]) for ln in lines] == [(e, f"m.epoch{e:03d}") for e in (1, 2, 3, 4)]


def test_single_checkpoint_collapse_unchanged(tracked, capsys):
    root, _, _ = tracked
    code, stdout, err = run_cli(["collapse", root / "m.epoch001.safetensors", "--data", TRACK, "--out",
                                 root / "single", "--no-cache", "-q"], capsys)
    assert code == 0, err
    assert "nc1" in stdout and not (root / "single" / "trajectory.csv").exists()
    assert (root / "single" / "collapse.csv").exists()


def test_tracking_does_not_change_training(tracked, tmp_path):
    root, out, _ = tracked
    plain, _ = finetune(out=tmp_path / "plain.safetensors", **KW)
    from ncprobe.checkpoint import load_checkpoint

    tracked_model = load_checkpoint(str(out)).model
    a, b = plain.state_dict(), tracked_model.state_dict()
    assert all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_resume_keeps_run_id_and_does_not_duplicate(tracked, tmp_path):
    _, _, reference = tracked
    out = tmp_path / "r.safetensors"
    kw = dict(KW, out=out, track=True, track_n=300)
    finetune(stop_after=2, **kw)
    first = read_table(tmp_path / "trajectory.csv")
    assert sorted(first.epoch.unique()) == [1, 2]
    # an interruption lost epoch 2's rows: the resumed run measures it (its checkpoint is still the latest)
    first[first.epoch != 2].to_csv(tmp_path / "trajectory.csv", index=False)
    assert torch.load(resume_path(out), weights_only=True)["track_run_id"] == first.run_id.iloc[0]
    finetune(resume=True, **kw)
    rows = read_table(tmp_path / "trajectory.csv")
    assert rows.run_id.nunique() == 1
    counts = rows.groupby(["epoch", "layer", "metric"]).size()
    assert (counts == 1).all() and sorted(rows.epoch.unique()) == [1, 2, 3, 4]
    # resumed training is the uninterrupted one, so the tracked values are too
    joined = reference.merge(rows, on=["epoch", "layer", "metric"], suffixes=("_a", "_b"), validate="one_to_one")
    assert len(joined) == len(reference)
    np.testing.assert_allclose(joined.value_b, joined.value_a, rtol=0, atol=1e-9)
    # resuming a finished run adds nothing
    finetune(resume=True, **kw)
    assert len(read_table(tmp_path / "trajectory.csv")) == len(rows)


def test_track_every_ood_aurocs_and_val(tmp_path):
    from ncprobe.metrics import auroc

    out = tmp_path / "o.safetensors"
    finetune(out=out, track=True, track_every=3, track_n=200, track_ood=["digits:test@classes=6-9"],
             val="digits:test@classes=0-5", track_scorers="energy", **{**KW, "epochs": 4})
    rows = read_table(tmp_path / "trajectory.csv")
    assert sorted(rows.epoch.unique()) == [3, 4]  # every 3rd and the last
    au = rows[rows.metric == "auroc"]
    assert set(au.scorer) == {"energy"} and set(au.layer) == {"logits"} and set(au.ood) == {"digits@classes=6-9"}
    # independent: energy = logsumexp of the logits of the ID validation set vs the OOD set
    from ncprobe.checkpoint import load_checkpoint
    from ncprobe.data import load_dataset
    from ncprobe.features import extract_features

    ckpt = load_checkpoint(str(out))
    def energy(spec):
        logits = extract_features(ckpt, load_dataset(spec), use_cache=False, progress=False)["logits"]
        return torch.logsumexp(torch.from_numpy(logits.astype(np.float64)), 1).numpy()
    ref = auroc(energy("digits:test@classes=0-5"), energy("digits:test@classes=6-9"))
    assert au[au.epoch == 4].value.iloc[0] == pytest.approx(ref, abs=1e-12)


def _hand_made() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for recipe in ("ce:aaa", "l2:bbb"):
        for seed in range(3):
            values = np.exp(-np.arange(1, 9) * rng.uniform(0.1, 0.6)) * rng.uniform(1, 3)
            if recipe == "ce:aaa" and seed == 2:
                values = values + 5.0  # never below the threshold
            for epoch, v in enumerate(values, start=1):
                rows.append({"recipe": recipe, "group": "", "mode": recipe[:2], "seed": seed, "run_id": f"r{seed}{recipe}",
                             "epoch": epoch, "step": epoch, "layer": "penultimate", "metric": "nc1", "value": v,
                             "scorer": "", "ood": ""})
                rows.append({**rows[-1], "layer": "encoder", "value": v / 100})  # other layers must not count
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # row order must not matter


def test_first_epoch_below_against_independent_computation():
    from ncprobe.report.trajectory import (
        first_epoch_below,
        first_epoch_table,
        summarize_first_epoch,
    )

    frame, threshold = _hand_made(), 0.5
    per_run = first_epoch_below(frame, threshold, by="recipe")
    expected = {}
    for (recipe, seed), part in frame[(frame.layer == "penultimate")].groupby(["recipe", "seed"]):
        part = part.sort_values("epoch")
        below = [e for e, v in zip(part.epoch, part.value, strict=True) if v < threshold]
        expected[(recipe, seed)] = below[0] if below else None
    assert len(per_run) == 6
    for row in per_run.itertuples():
        want = expected[(row.recipe, row.seed)]
        assert (np.isnan(row.first_epoch) and want is None) or row.first_epoch == want
        assert row.reached == (want is not None) and row.last_epoch == 8
    summary = summarize_first_epoch(per_run, by="recipe").set_index("recipe")
    for recipe in ("ce:aaa", "l2:bbb"):
        got = [v for (r, _), v in expected.items() if r == recipe and v is not None]
        assert summary.loc[recipe, "runs"] == 3 and summary.loc[recipe, "reached"] == len(got)
        assert summary.loc[recipe, "first_epoch_mean"] == pytest.approx(statistics.mean(got))
        assert summary.loc[recipe, "first_epoch_std"] == pytest.approx(statistics.stdev(got))
    assert summary.loc["ce:aaa", "reached"] == 2  # the shifted seed never gets there
    text = first_epoch_table(frame, threshold, by="mode", fmt="markdown")
    assert text.splitlines()[0] == "first epoch with nc1 at penultimate < 0.5" and "| l2 |" in text
    never = first_epoch_below(frame, 1e-9)
    assert not never.reached.any() and never.first_epoch.isna().all()


def test_bad_track_data_is_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(["finetune", "--arch", "small_cnn", "--data", DIGITS, "--mode", "ce", "--epochs", "1",
                            "--track", "--track-data", "nosuchset:train", "--out", tmp_path / "m.safetensors"], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "m.safetensors").exists()
    code, _, err = run_cli(["finetune", "--arch", "small_cnn", "--data", DIGITS, "--mode", "ce", "--epochs", "1",
                            "--track-ood", "digits:test", "--out", tmp_path / "m.safetensors"], capsys)
    assert code == 2 and "--track" in err and len(err.strip().splitlines()) == 1, err


def test_collapse_glob_matching_nothing_is_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(["collapse", str(tmp_path / "none*.safetensors"), "--data", DIGITS], capsys)
    assert code == 2 and err.startswith("error: no checkpoint file matches") and len(err.strip().splitlines()) == 1
