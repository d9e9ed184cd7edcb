"""Checkpoint metadata is never trusted: hostile values are refused before anything is allocated,
imported or fetched (each file is built here, in tmp_path)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ncprobe.checkpoint import load_checkpoint
from ncprobe.cli import main
from ncprobe.errors import CheckpointError


def _ncprobe_file(tmp_path, **meta):
    base = {"arch": "small_cnn", "mode": "ce", "num_classes": 4, "input_size": [3, 8, 8]}
    base.update(meta)
    path = tmp_path / "hostile.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "ncprobe", "ncprobe": json.dumps(base)})
    return path


@pytest.mark.parametrize("meta, needle", [
    ({"num_classes": 10**11}, "num_classes"),
    ({"num_classes": -3}, "num_classes"),
    ({"num_classes": "7"}, "num_classes"),
    ({"num_classes": True}, "num_classes"),
    ({"arch": "wrn10000_1000"}, "parameters"),
    ({"arch": "timm:hf-hub:evil/evil"}, "hub"),
    ({"arch": ["x"]}, "arch"),
    ({"input_size": [3, 30000, 30000]}, "input_size"),
    ({"input_size": [3, 8]}, "input_size"),
    ({"mean": [float("nan"), 0, 0]}, "mean"),
    ({"std": [0, 1, 1]}, "std"),
    ({"head": {"projector_dim": 10**9}}, "projector_dim"),
    ({"head": {"evil": 1}}, "head option"),
    ({"mode": "rm -rf"}, "mode"),
])
def test_hostile_ncprobe_metadata_is_refused_fast(tmp_path, monkeypatch, meta, needle):
    import timm

    def no_timm(*args, **kwargs):
        raise AssertionError("a name read from a file reached timm")

    monkeypatch.setattr(timm, "create_model", no_timm)
    path = _ncprobe_file(tmp_path, **meta)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(path)
    assert time.perf_counter() - started < 20


def test_a_plain_file_with_a_silly_class_count_falls_back_to_the_head(tmp_path):
    from ncprobe.models import create_model

    model = create_model("cifar_resnet20")
    path = tmp_path / "r20.pt"
    torch.save({"state_dict": model.state_dict(), "num_classes": 10**11}, path)
    assert load_checkpoint(path).num_classes == 10


@pytest.mark.parametrize("flag, value, needle", [
    ("--mean", "nan,0,0", "finite"), ("--std", "inf,1,1", "finite"), ("--std", "0,1,1", "positive"),
    ("--input-size", "3,30000,30000", "too large"),
])
def test_non_finite_normalization_and_huge_input_flags(tmp_path, capsys, flag, value, needle):
    from ncprobe.models import create_model

    path = tmp_path / "r20.pt"
    torch.save(create_model("cifar_resnet20").state_dict(), path)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(path), "--data", str(tmp_path / "d.npz"), "--no-cache", "-q", flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1
