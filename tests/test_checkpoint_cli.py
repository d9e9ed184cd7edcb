"""`ncprobe inspect`: the report, and one-line errors (exit 2, no traceback) for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ncprobe.cli import main
from ncprobe.models import create_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    empty = tmp_path / "empty-registry.yaml"
    empty.write_text("checkpoints: []\n")
    monkeypatch.setenv("NCPROBE_REGISTRY", str(empty))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main(["inspect", *map(str, args)])
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _resnet20_file(tmp_path, classes=7, name="model.pt"):
    torch.manual_seed(0)
    path = tmp_path / name
    torch.save(create_model("cifar_resnet20", classes).state_dict(), path)
    return path


class Payload:
    """Any class outside torch's allowlist: unpickling it would import and run code."""

    def __init__(self):
        self.x = 1


def _bad_inputs(tmp_path):
    good = _resnet20_file(tmp_path, name="good.pt")
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"encoder.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, tmp_path / "nofit.pt")
    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "code.pt")
    (tmp_path / "adir").mkdir()
    legacy = tmp_path / "legacy.pt"
    torch.save(create_model("cifar_resnet20", 7).state_dict(), legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "truncated_legacy.pt").write_bytes(legacy.read_bytes()[:300])
    return {
        "truncated": ([tmp_path / "truncated.pt"], "is corrupt or not a checkpoint"),
        "truncated_legacy": ([tmp_path / "truncated_legacy.pt"], "is corrupt or not a checkpoint"),
        "random": ([tmp_path / "random.pt"], "is corrupt or not a checkpoint"),
        "empty": ([tmp_path / "empty.pt"], "is corrupt or not a checkpoint (the file is empty)"),
        "nofit": ([tmp_path / "nofit.pt"], "matches no known architecture"),
        "code": ([tmp_path / "code.pt"], "needs arbitrary code to unpickle"),
        "missing": ([tmp_path / "nope.pt"], "not found"),
        "directory": ([tmp_path / "adir"], "is a directory"),
        "unknown_arch": ([good, "--arch", "resnet9000"], "unknown architecture 'resnet9000'"),
        "wrong_arch": ([good, "--arch", "cifar_resnet44"], "does not fit architecture cifar_resnet44"),
        "bad_mean": ([good, "--mean", "a,b,c"], "mean must be numbers"),
    }


@pytest.mark.parametrize(
    "case",
    ["truncated", "truncated_legacy", "random", "empty", "nofit", "code", "missing", "directory", "unknown_arch",
     "wrong_arch", "bad_mean"],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    args, expected = _bad_inputs(tmp_path)[case]
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err + out
    if case in ("truncated", "random", "empty", "truncated_legacy", "code"):
        assert str(args[0]) in err  # names the file
    if case == "code":
        assert "--trust-pickle" in err and "Payload" in err


def test_bad_inputs_through_the_console_entry_point(tmp_path):
    cases = _bad_inputs(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for case in ("truncated", "code", "missing"):
        args, expected = cases[case]
        proc = subprocess.run(
            [sys.executable, "-m", "ncprobe", "inspect", *map(str, args)],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and expected in proc.stderr
        assert "Traceback" not in proc.stderr


def test_inspect_report(tmp_path, capsys):
    path = _resnet20_file(tmp_path)
    code, out, err = _run(capsys, path)
    # nothing says this file's normalization and no labelled set is given: one line names the assumption
    assert code == 0 and err.count("\n") == 1 and err.startswith("warning: normalization:") and "--mean/--std" in err
    lines = out.splitlines()
    row = {ln.split()[0]: ln for ln in lines if ln and not ln.startswith(" ")}
    assert "cifar_resnet20" in row["architecture"] and row["architecture"].endswith("inferred")
    assert row["classes"].split()[1] == "7" and row["classes"].endswith("inferred")
    assert "3 x 32 x 32" in row["input"] and row["input"].endswith("default")
    assert "linear (Linear 64 -> 7)" in row["head"]
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert sha in row["sha256"] and row["sha256"].endswith("file")
    # the origin column is aligned
    cols = {ln.rstrip().rfind(" ") for key, ln in row.items() if key in ("architecture", "classes", "mean", "std")}
    assert len(cols) == 1
    probes = [ln.split() for ln in lines if ln.startswith("  ") and ln.strip() != "origin"]
    table = {p[0]: " ".join(p[1:]) for p in probes}
    assert table["layer1"] == "16 x 32 x 32" and table["layer2"] == "32 x 16 x 16" and table["layer3"] == "64 x 8 x 8"
    assert table["penultimate"] == "(input of linear) 64" and table["logits"] == "7"
    assert [p[0] for p in probes][1:] == ["layer1", "layer2", "layer3", "penultimate", "logits"]


def test_inspect_json_and_flags(tmp_path, capsys):
    path = _resnet20_file(tmp_path)
    code, out, _ = _run(capsys, path, "--json", "--arch", "cifar_resnet20", "--mean", "0.5,0.5,0.5", "--input-size", "48")
    assert code == 0
    info = json.loads(out)
    assert info["arch"] == "cifar_resnet20" and info["origin"]["arch"] == "flag"
    assert info["mean"] == [0.5, 0.5, 0.5] and info["origin"]["mean"] == "flag"
    assert info["input_size"] == [3, 48, 48] and info["shapes"]["layer1"] == [16, 48, 48]
    assert info["probe_layers"] == ["layer1", "layer2", "layer3", "penultimate", "logits"]
