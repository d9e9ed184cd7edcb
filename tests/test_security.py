"""Hostile files never run code without a trust flag: each test builds its attack in tmp_path and
checks with a canary file that nothing outside the test's folder changed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ncprobe.checkpoint import load_checkpoint
from ncprobe.cli import main
from ncprobe.errors import CheckpointError
from ncprobe.models import create_model


class _Writer(nn.Module):
    """A scripted model whose forward memory-maps a path and writes bytes into it."""

    def __init__(self, target: str, inner: nn.Module):
        super().__init__()
        self.target = target
        self.module = inner  # keys module.*: the layout of a DataParallel-saved model

    def forward(self, x):
        t = torch.from_file(self.target, True, 8, dtype=torch.uint8)
        t.fill_(65)
        return self.module(x) + 0 * t.sum()


def _hostile(tmp_path, inner: nn.Module):
    canary = tmp_path / "outside" / "canary.bin"
    canary.parent.mkdir()
    canary.write_bytes(b"\x00" * 8)
    path = tmp_path / "hostile.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Writer(str(canary), inner)), str(path))
    return path, canary


def _run(args, capsys):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_the_attack_works_when_trusted(tmp_path):
    """The hostile file really writes through its forward, so the refusals below are meaningful."""
    path, canary = _hostile(tmp_path, nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(path))(torch.zeros(1, 3, 4, 4))
    assert canary.read_bytes() == b"A" * 8


def test_scripted_code_of_an_unknown_architecture_is_refused_without_trust(tmp_path, capsys):
    path, canary = _hostile(tmp_path, nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)))
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 4, 4, 3), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(CheckpointError, match="--trust-code"):
        load_checkpoint(path)
    code, err = _run(["eval", path, "--data", tmp_path / "d.npz", "--no-cache", "-q"], capsys)
    assert code == 2 and "--trust-code" in err and len(err.strip().splitlines()) == 1
    code, err = _run(["inspect", path], capsys)
    assert code == 2 and "--trust-code" in err
    assert canary.read_bytes() == b"\x00" * 8


def test_scripted_file_of_a_known_architecture_loads_its_tensors_only(tmp_path, capsys):
    """The tensors go into ncprobe's own eager ResNet-20: the file's forward never runs."""
    torch.manual_seed(0)
    ref = create_model("cifar_resnet20").eval()
    path, canary = _hostile(tmp_path, ref)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "cifar_resnet20" and ckpt.origin["arch"] == "inferred"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(ckpt.model(x).numpy(), ref(x).numpy(), atol=1e-5)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=np.zeros(4, np.int64))
    code, err = _run(["eval", path, "--data", tmp_path / "d.npz", "--no-cache", "-q"], capsys)
    assert code in (0, None), err
    assert canary.read_bytes() == b"\x00" * 8


def test_script_tensors_equal_torch_jit_load(tmp_path):
    from ncprobe.checkpoint.script_tensors import read_script_tensors

    torch.manual_seed(1)
    net = create_model("cifar_resnet20").eval()
    for how in ("script", "trace"):
        path = tmp_path / f"{how}.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.zeros(1, 3, 32, 32))
            torch.jit.save(mod, str(path))
            expected = torch.jit.load(str(path)).state_dict()
        got = read_script_tensors(path)
        assert list(got) == list(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_torchscript_archive_whose_data_pickle_calls_code_is_never_unpickled(tmp_path):
    """data.pkl that would run os.system on load: read_script_tensors refuses the global."""
    import os
    import pickle
    import zipfile

    from ncprobe.checkpoint.script_tensors import read_script_tensors

    canary = tmp_path / "outside" / "ran"
    canary.parent.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        zf.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("evil/code/__torch__/m.py", "def forward(self):\n  pass\n")
        zf.writestr("evil/version", "3\n")
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        read_script_tensors(path)
    with pytest.raises(CheckpointError, match="--trust-code"):
        load_checkpoint(path)
    assert not canary.exists()
