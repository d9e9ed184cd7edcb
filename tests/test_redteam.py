"""Cases found by an independent red-team pass, each rebuilt here: one line and no silent number."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import torch

from ncprobe.checkpoint import load_checkpoint
from ncprobe.cli import main
from ncprobe.errors import CheckpointError, DatasetError, NcprobeError
from ncprobe.models import create_model

ID = "digits:test@classes=0-3"


def _one_line(args, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.mark.parametrize("how", ["sparse", "complex"])
def test_sparse_or_complex_weights_are_refused(tmp_path, how):
    sd = create_model("small_cnn", num_classes=4).state_dict()
    key = next(k for k in sd if k.endswith("weight"))
    sd[key] = sd[key].to_sparse() if how == "sparse" else sd[key].to(torch.complex64)
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="not dense" if how == "sparse" else "complex"):
        load_checkpoint(tmp_path / "w.pt")


def test_a_huge_classes_range_is_refused_before_it_is_expanded():
    from ncprobe.data import load_dataset

    started = time.perf_counter()
    with pytest.raises(DatasetError, match="class ids go up to"):
        load_dataset("digits:test@classes=0-99999999999")
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("extra, needle", [
    (["--out", "/proc/m.safetensors"], "not a writable folder"),
    (["--out", "{tmp}/m.safetensors", "--seed", "-1"], "--seed"),
    (["--out", "{tmp}/m.safetensors", "--seed", "99999999999999999999"], "--seed"),
    (["--out", "{tmp}/m.safetensors", "--mode", "etf", "--projector-dim", "10000000"], "--projector-dim"),
])
def test_finetune_refuses_before_training(tmp_path, capsys, extra, needle):
    args = ["finetune", "--arch", "small_cnn", "--data", "digits:train@classes=0-3,n=64", "--epochs", "1", "-q"]
    extra = [e.format(tmp=tmp_path) for e in extra]
    if "--mode" not in extra:
        args += ["--mode", "ce"]
    assert needle in _one_line(args + extra, capsys)


def test_finetuned_checkpoints_follow_the_umask(tmp_path):
    from ncprobe.models.ncprobe_format import save_checkpoint

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", create_model("small_cnn", num_classes=4),
                               {"arch": "small_cnn", "mode": "ce", "num_classes": 4})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def _table(tmp_path, aurocs):
    rows = [{"run_id": f"r{i}", "checkpoint": "c", "group": "", "scorer": "msp", "layer": "logits", "ood": "o",
             "auroc": a, "fpr95": 0.5, "id_accuracy": 0.9} for i, a in enumerate(aurocs)]
    path = tmp_path / "ood.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_leaderboard_leaves_out_impossible_aurocs_with_a_warning(tmp_path, capsys):
    path = _table(tmp_path, [0.8, 2.5, -1.0])
    with pytest.warns(UserWarning, match="out-of-range"):
        main(["leaderboard", str(path), "--format", "csv"])
    captured = capsys.readouterr()
    board = pd.read_csv(__import__("io").StringIO(captured.out))
    assert board["auroc_mean"].tolist() == [0.8] and board["runs"].tolist() == [1]


@pytest.mark.parametrize("group", ["auroc", "fpr95", "layer", "id_accuracy"])
def test_leaderboard_cannot_group_by_a_measured_value(tmp_path, capsys, group):
    assert "measured value" in _one_line(["leaderboard", _table(tmp_path, [0.8]), "--group-by", group], capsys)


def test_leaderboard_group_by_a_column_twice_is_once(tmp_path, capsys):
    path = _table(tmp_path, [0.8, 0.6])
    pd.read_csv(path).assign(seed=[0, 1]).to_csv(path, index=False)  # two seeds of a fit split: two measurements
    main(["leaderboard", str(path), "--group-by", "checkpoint,checkpoint", "--format", "csv"])
    board = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert board["auroc_mean"].round(6).tolist() == [0.7]


def test_max_params_must_be_a_number(monkeypatch):
    from ncprobe.models.spec import max_parameters

    for bad in ("garbage", "-1", "0"):
        monkeypatch.setenv("NCPROBE_MAX_PARAMS", bad)
        with pytest.raises(NcprobeError, match="NCPROBE_MAX_PARAMS"):
            max_parameters()
    monkeypatch.setenv("NCPROBE_MAX_PARAMS", "5e8")
    assert max_parameters() == 500_000_000


def test_high_resolution_batches_are_bounded():
    from ncprobe.jobs.extract import BATCH_INPUT_BYTES, bounded_batch

    assert bounded_batch(256, (3, 32, 32)) == 256
    assert bounded_batch(256, (3, 1024, 1024)) == BATCH_INPUT_BYTES // (4 * 3 * 1024 * 1024)
    assert bounded_batch(256, (3, 1024, 1024)) >= 1 and bounded_batch(4, (3, 4096, 4096)) == 1


@pytest.mark.parametrize("extra, needle", [
    (["--data", "digits:train@classes=3"], "at least 2"),
    (["--data", "digits:train@classes=0-3,n=64", "--val", "digits:test"], "validate on the same classes"),
])
def test_finetune_refuses_a_one_class_set_and_a_validation_set_beyond_its_classes(tmp_path, capsys, extra, needle):
    args = ["finetune", "--arch", "small_cnn", "--mode", "ce", "--epochs", "1", "-q", "--out",
            str(tmp_path / "m.safetensors"), *extra]
    assert needle in _one_line(args, capsys)
