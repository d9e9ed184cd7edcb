"""Normalization is never silent: calibration picks the normalization a model was trained with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncprobe.checkpoint import load_checkpoint
from ncprobe.data import load_dataset
from ncprobe.data.transforms import Preprocess
from ncprobe.jobs.calibrate import assumption_warning, calibrate, needs_calibration
from ncprobe.models import create_model

MADE_UP = {
    "a": ((0.2, 0.5, 0.8), (0.1, 0.3, 0.2)),
    "b": ((0.7, 0.1, 0.4), (0.4, 0.1, 0.3)),
    "c": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


_TRAINED: dict = {}


def _train(tmp_path, norm: str):
    """A small CNN trained a little on digits 0-3 under the made-up normalization ``norm`` (once per session)."""
    if norm in _TRAINED:
        return _TRAINED[norm]
    torch.manual_seed(0)
    src = load_dataset("digits:train@classes=0-3")
    model = create_model("small_cnn", num_classes=4)
    pre = Preprocess(*MADE_UP[norm], (8, 8))
    x = pre(torch.from_numpy(src.images).permute(0, 3, 1, 2))
    y = torch.from_numpy(src.labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    path = tmp_path / f"trained-{norm}.pt"
    torch.save(model.eval().state_dict(), path)
    _TRAINED[norm] = path
    return path


@pytest.mark.parametrize("norm", ["a", "b"])
def test_calibration_picks_the_made_up_normalization_it_was_trained_with(tmp_path, norm):
    ckpt = load_checkpoint(_train(tmp_path, norm), input_size=8)
    assert needs_calibration(ckpt) and "assuming" in assumption_warning(ckpt)
    line = calibrate(ckpt, load_dataset("digits:test@classes=0-3"), candidates=MADE_UP)
    assert ckpt.mean == MADE_UP[norm][0] and ckpt.std == MADE_UP[norm][1]
    assert ckpt.origin["mean"] == "calibrated" and line.startswith(f"normalization: calibrated -> {norm} (NLL")
    assert not needs_calibration(ckpt)


def test_flags_always_win(tmp_path):
    ckpt = load_checkpoint(_train(tmp_path, "a"), input_size=8, mean="0.7,0.1,0.4", std="0.4,0.1,0.3")
    assert calibrate(ckpt, load_dataset("digits:test@classes=0-3"), candidates=MADE_UP) is None
    assert ckpt.mean == MADE_UP["b"][0] and ckpt.origin["mean"] == "flag"


def test_calibrated_values_reach_the_csv_rows(tmp_path):
    from ncprobe import api

    res = api.layers(str(_train(tmp_path, "a")), "digits:test@classes=0-3", ["noise:gaussian@n=20,size=8"],
                     "digits:train@classes=0-3", scorers="msp", use_cache=False, progress=False, plot=False,
                     checkpoint_options={"input_size": 8})
    assert res.notes and "calibrated" in res.notes[0]
    assert set(res.ood["norm_origin"]) == {"calibrated"} == set(res.collapse["norm_origin"])
    ck = res.checkpoint
    assert set(res.ood["mean"]) == {"/".join(f"{v:g}" for v in ck.mean)}


@pytest.mark.shared
def test_a_renamed_public_checkpoint_is_calibrated_to_imagenet(shared_data, tmp_path, capsys):
    """akamaster's ResNet-20 with `module.` stripped: not in the registry, normalization unknown."""
    from ncprobe.cli import main

    raw = torch.load(shared_data / "checkpoints" / "resnet20-12fca82f.th", map_location="cpu", weights_only=True)
    path = tmp_path / "my_resnet.pt"
    torch.save({k.removeprefix("module."): v for k, v in raw["state_dict"].items()}, path)
    try:
        main(["eval", str(path), "--data", str(shared_data / "cifar10_test.npz"), "--no-cache", "-q"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    captured = capsys.readouterr()
    assert "normalization: calibrated -> imagenet" in captured.err
    assert float(captured.out.split("accuracy:")[1]) == pytest.approx(0.9172, abs=5e-4)  # published 91.73


def test_an_unlabelled_set_calibrates_nothing(tmp_path):
    ckpt = load_checkpoint(_train(tmp_path, "a"), input_size=8)
    before = (ckpt.mean, ckpt.std, dict(ckpt.origin))
    src = load_dataset("noise:gaussian@n=10,size=8")
    assert np.all(src.labels < 0)
    assert calibrate(ckpt, src, candidates=MADE_UP) is None
    assert (ckpt.mean, ckpt.std, ckpt.origin) == before


def test_a_rerun_reads_the_calibration_from_the_cache(tmp_path, monkeypatch):
    import ncprobe.jobs.calibrate as cal

    src = load_dataset("digits:test@classes=0-3")
    first = load_checkpoint(_train(tmp_path, "a"), input_size=8)
    line = calibrate(first, src, candidates=MADE_UP, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "calibration").glob("*.json"))

    def no_forward(*args, **kwargs):
        raise AssertionError("the cached calibration ran the model again")

    monkeypatch.setattr(cal, "_measure", no_forward)
    again = load_checkpoint(_train(tmp_path, "a"), input_size=8)
    assert calibrate(again, src, candidates=MADE_UP, cache_dir=tmp_path / "cache") == line
    assert (again.mean, again.std) == (first.mean, first.std)
    # a damaged entry is measured again, never trusted
    for entry in (tmp_path / "cache" / "calibration").glob("*.json"):
        entry.write_text("{not json")
    monkeypatch.undo()
    third = load_checkpoint(_train(tmp_path, "a"), input_size=8)
    assert calibrate(third, src, candidates=MADE_UP, cache_dir=tmp_path / "cache") == line
    # with the cache off nothing is read
    monkeypatch.setattr(cal, "_measure", lambda *a, **k: {})
    assert calibrate(load_checkpoint(_train(tmp_path, "a"), input_size=8), src, candidates=MADE_UP,
                     cache_dir=tmp_path / "cache", use_cache=False) is None
