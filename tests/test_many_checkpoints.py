"""Several checkpoints in one `layers` call: the same rows as separate calls, each image read once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ncprobe.api import layers, layers_many
from ncprobe.cli import cli
from ncprobe.data import items
from ncprobe.models import create_model
from tests.helpers import run_main

OPTS = {"arch": "small_cnn", "mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25", "input_size": "16"}
# the columns that differ between two runs of the same thing (identity and time)
VOLATILE = ["run_id", "timestamp", "ncprobe_version"]


def _ckpts(tmp_path, n=3):
    paths = []
    for seed in range(n):
        torch.manual_seed(seed)
        path = tmp_path / f"seed{seed}.pt"
        torch.save(create_model("small_cnn", num_classes=3).state_dict(), path)
        paths.append(path)
    return paths


def _folder(root, n_per_class, classes, seed, size=12):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for j in range(n_per_class):
            base = rng.integers(40 * c, 40 * c + 80, size=(size, size, 3))
            Image.fromarray(base.astype(np.uint8)).save(root / f"c{c}" / f"{j}.png")
    return root


@pytest.fixture
def sets(tmp_path):
    return {
        "fit": str(_folder(tmp_path / "fit", 8, 3, 0)),
        "id": str(_folder(tmp_path / "id", 5, 3, 1)),
        "ood": f"far={_folder(tmp_path / 'ood', 6, 1, 2)}",
    }


def _strip(df):
    return df.drop(columns=VOLATILE, errors="ignore").reset_index(drop=True)


def _main(args, capsys) -> tuple[int, str]:
    code, out, err = run_main(args, capsys)
    return code, out + err


def test_many_equals_separate_calls_and_reads_each_image_once(tmp_path, sets, monkeypatch, one_torch_thread):
    paths = _ckpts(tmp_path)
    kw = {"scorers": "gda,knn,energy,msp", "use_cache": False, "progress": False, "checkpoint_options": OPTS}
    separate = [layers(str(p), sets["id"], [sets["ood"]], sets["fit"], **kw) for p in paths]

    reads: dict[str, int] = {}
    original = items.ImageFileLoader.__call__

    def counting(self, i):
        path = str(self.paths[int(i)])
        reads[path] = reads.get(path, 0) + 1
        return original(self, i)

    monkeypatch.setattr(items.ImageFileLoader, "__call__", counting)
    together = layers_many([str(p) for p in paths], sets["id"], [sets["ood"]], sets["fit"], **kw)
    assert len(reads) == 3 * 8 + 3 * 5 + 6  # every image of every set was read ...
    assert set(reads.values()) == {1}  # ... exactly once, for the three checkpoints together
    for one, many in zip(separate, together, strict=True):
        pd.testing.assert_frame_equal(_strip(one.ood), _strip(many.ood))
        pd.testing.assert_frame_equal(_strip(one.collapse), _strip(many.collapse))
    assert len({r.run_id for r in together}) == 3


def test_cli_takes_several_checkpoints_and_a_glob(tmp_path, sets, one_torch_thread):
    _ckpts(tmp_path, n=2)
    out = tmp_path / "runs"
    args = ["layers", str(tmp_path / "seed*.pt"), "--id", sets["id"], "--ood", sets["ood"], "--fit", sets["fit"],
            "--scorers", "energy,msp", "--arch", "small_cnn", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
            "--input-size", "16", "--no-cache", "-q", "--out", str(out), "--no-plot"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    ood = pd.read_csv(out / "ood.csv")
    assert ood["run_id"].nunique() == 2 and ood["checkpoint"].nunique() == 2
    assert "Leaderboard over these runs" in res.output
    # two untagged plain checkpoints are not pooled: each is its own leaderboard entry
    board_lines = [ln for ln in res.output.splitlines() if " energy " in f" {ln} "]
    assert len(board_lines) >= 2


def test_same_checkpoint_twice_and_empty_glob_are_one_line_errors(tmp_path, sets, capsys):
    (p,) = _ckpts(tmp_path, n=1)
    base = ["--id", sets["id"], "--ood", sets["ood"], "--fit", sets["fit"], "--arch", "small_cnn", "-q",
            "--out", str(tmp_path / "runs")]
    twin = tmp_path / "twin.pt"
    twin.write_bytes(p.read_bytes())  # the same weights under another name
    code, text = _main(["layers", str(p), str(twin), *base], capsys)
    assert code == 2 and "given twice" in text and "Traceback" not in text and len(text.strip().splitlines()) == 1
    code, text = _main(["layers", str(tmp_path / "nothing*.pt"), *base], capsys)
    assert code == 2 and "no checkpoint file matches" in text
    assert not (tmp_path / "runs").exists()
