"""One line, every time: user mistakes found by an independent attack end in `error: ...`, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprobe.cli import main
from ncprobe.models import create_model

ID = "digits:test@classes=0-3"
FIT = "digits:train@classes=0-3"




def _err(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("device", ["mps", "xla", "meta", "cuda:7", "nonsense"])
def test_devices_that_cannot_run(small_ckpt, capsys, device):
    line = _err(["eval", small_ckpt, "--data", ID, "--no-cache", "-q", "--device", device], capsys)
    assert device in line


def test_nan_weights_give_an_error_not_an_accuracy(tmp_path, capsys):
    model = create_model("small_cnn", num_classes=4)
    sd = model.state_dict()
    key = next(k for k in sd if k.endswith("weight"))
    sd[key] = torch.full_like(sd[key], float("nan"))
    torch.save(sd, tmp_path / "nan.pt")
    line = _err(["eval", tmp_path / "nan.pt", "--data", ID, "--no-cache", "-q"], capsys)
    assert "NaN or inf" in line and "logits" in line


def test_id_labels_beyond_the_head(small_ckpt, capsys):
    line = _err(["layers", small_ckpt, "--id", "digits:test", "--fit", FIT, "--ood", "noise:gaussian", "--no-cache",
                 "-q"], capsys)
    assert "label 9" in line and "4 classes" in line


def test_the_same_ood_set_twice(small_ckpt, capsys):
    line = _err(["layers", small_ckpt, "--id", ID, "--fit", FIT, "--ood", "noise:gaussian", "--ood",
                 "again=noise:gaussian", "--no-cache", "-q"], capsys)
    assert "twice" in line and "--ood" in line


def test_empty_scorer_list(small_ckpt, capsys):
    line = _err(["layers", small_ckpt, "--id", ID, "--fit", FIT, "--ood", "noise:gaussian", "--scorers", ",",
                 "--no-cache", "-q"], capsys)
    assert "--scorers" in line


def test_uint64_labels_in_an_npz_are_not_silently_unlabelled(small_ckpt, tmp_path, capsys):
    np.savez(tmp_path / "u.npz", x=np.zeros((4, 8, 8, 3), np.uint8), y=np.array([0, 1, 2, 2**64 - 1], np.uint64))
    line = _err(["eval", small_ckpt, "--data", tmp_path / "u.npz", "--no-cache", "-q"], capsys)
    assert "label" in line


def test_a_failed_run_leaves_no_empty_out_folder(small_ckpt, tmp_path, capsys):
    out = tmp_path / "new" / "runs"
    _err(["layers", small_ckpt, "--id", ID, "--fit", FIT, "--ood", "nope.npz", "--out", out, "--no-cache", "-q"], capsys)
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    line = _err(["layers", small_ckpt, "--id", ID, "--fit", FIT, "--ood", "noise:gaussian", "--out",
                 tmp_path / "file" / "sub", "--no-cache", "-q"], capsys)
    assert "is a file" in line


@pytest.mark.parametrize("damage", ["truncate", "flip", "text"])
def test_a_damaged_resume_state_is_one_line(tmp_path, capsys, damage):
    out = tmp_path / "m.safetensors"
    args = ["finetune", "--arch", "small_cnn", "--data", "digits:train@classes=0-3,n=64", "--mode", "ce",
            "--epochs", "2", "--batch-size", "16", "--out", out, "-q"]
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None)
    capsys.readouterr()
    state = tmp_path / "m.safetensors.resume.pt"
    data = state.read_bytes()
    if damage == "truncate":
        state.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        state.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    else:
        state.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args + ["--resume"]])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "weights_only" not in err and ("damaged" in err or "resume" in err)


def test_a_model_with_a_fixed_input_size_guessed_wrong_says_pass_input_size(tmp_path, capsys):
    import warnings

    from torch import nn

    class Fixed(nn.Module):  # only takes 8x8 inputs: flatten then a Linear
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 4)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    path = tmp_path / "fixed.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Fixed().eval()), str(path))
    line = _err(["inspect", path, "--trust-code"], capsys)
    assert "--input-size" in line
    # a labelled set of 16x16 images: neither 16 nor the guessed 224 fits the model
    np.savez(tmp_path / "d16.npz", x=np.zeros((6, 16, 16, 3), np.uint8), y=np.arange(6) % 4)
    line = _err(["eval", path, "--trust-code", "--data", tmp_path / "d16.npz", "--no-cache", "-q"], capsys)
    assert "--input-size" in line
    for extra in (["--input-size", "3,8,8"], []):  # given, or calibrated on 8x8 digits (their native size)
        try:
            main(["eval", str(path), "--trust-code", "--data", ID, "--no-cache", "-q", *extra])
        except SystemExit as exc:
            assert exc.code in (0, None)
        captured = capsys.readouterr()
        assert "accuracy:" in captured.out
    assert "calibrated" in captured.err and "8x8" in captured.err


def test_an_os_error_anywhere_is_one_line(monkeypatch, capsys):
    import ncprobe.api as api_mod

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "/some/where/ood.csv")

    monkeypatch.setattr(api_mod, "evaluate", full_disk)
    line = _err(["eval", "x.pt", "--data", ID], capsys)
    assert line == ("error: /some/where/ood.csv: No space left on device; check the path, its permissions and the "
                    "free space")


def test_undecodable_path_names_print(monkeypatch, capsys):
    import os

    import ncprobe.api as api_mod

    bad = os.fsdecode(b"/tmp/caf\xe9.csv")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", bad)

    monkeypatch.setattr(api_mod, "evaluate", denied)
    line = _err(["eval", "x.pt", "--data", ID], capsys)
    assert "Permission denied" in line and "caf" in line


def test_a_checkpoint_whose_file_name_is_not_utf8_runs_and_writes(tmp_path, capsys):
    import os

    import pandas as pd

    name = os.fsdecode(b"caf\xe9.pt")
    torch.save(create_model("small_cnn", num_classes=4).state_dict(), tmp_path / name)
    main(["layers", str(tmp_path / name), "--id", ID, "--fit", FIT, "--ood", "noise:gaussian", "--no-cache", "-q",
          "--out", str(tmp_path / "out"), "--no-plot", "--scorers", "msp"])
    capsys.readouterr()
    ood = pd.read_csv(tmp_path / "out" / "ood.csv")
    assert set(ood["checkpoint"]) == {"caf\\xe9"}


@pytest.mark.parametrize("extra, needle", [
    (["--fit", ID, "--ood", "noise:gaussian"], "fit set"),
    (["--fit", FIT, "--ood", ID], "is the ID set itself"),
    (["--fit", FIT, "--ood", "noise:gaussian", "--val-ood", ID], "validation OOD set"),
    (["--fit", FIT, "--ood", "noise:gaussian", "--val-ood", "noise:uniform", "--val-ood", "noise:uniform"], "twice"),
    (["--fit", FIT, "--ood", "noise:gaussian", "--scorer-param", "knn.k=1.5"], "whole number"),
    (["--fit", FIT, "--ood", "noise:gaussian", "--scorer-param", "neco.maxlogit=maybe"], "true or false"),
    (["--fit", FIT, "--ood", "noise:gaussian", "--scorer-param", "energy.T=inf"], "finite"),
    (["--fit", FIT, "--ood", "noise:gaussian", "--scorer-param", "probe_energy.c=0"], "c > 0"),
    (["--fit", FIT, "--ood", "noise:gaussian", "--scorer-param", "mahalanobis.rcond=-1"], "rcond"),
])
def test_sets_that_would_inflate_numbers_and_bad_scorer_values(small_ckpt, capsys, extra, needle):
    line = _err(["layers", small_ckpt, "--id", ID, *extra, "--no-cache", "-q"], capsys)
    assert needle in line
