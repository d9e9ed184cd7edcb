"""`ncprobe bench`: presets are data, sets resolve under --data-root or --set, the near/far table
equals the per-set rows' means, missing sets are one line, full-spectrum counts csID as ID."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch

from ncprobe.api import bench
from ncprobe.jobs.presets import load_presets
from ncprobe.models import create_model
from tests.helpers import run_main

OPTS = ["--arch", "small_cnn", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--input-size", "16"]
CKPT_OPTS = {"arch": "small_cnn", "mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25", "input_size": "16"}


def _npz(path, n, classes, seed, shift=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, 16, 16, 3)) + (30 * y + shift)[:, None, None, None]
    np.savez(path, x=np.clip(x, 0, 255).astype(np.uint8), y=y.astype(np.int64))
    return str(path)


def _svhn(root, n=30, seed=5):
    """A torchvision-format SVHN test file (X: 32x32x3xN, y: Nx1 with 10 for digit 0) from random images."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
    scipy.io.savemat(root / "test_32x32.mat", {"X": x, "y": y})


@pytest.fixture
def ddu_sets(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    _svhn(root)
    sets = {"cifar10": _npz(tmp_path / "id.npz", 30, 3, 1), "cifar10-train": _npz(tmp_path / "fit.npz", 45, 3, 0),
            "cifar100": _npz(tmp_path / "near.npz", 24, 3, 2, shift=15)}
    return root, sets


@pytest.fixture
def ckpts(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"m{seed}.pt")
        torch.save(create_model("small_cnn", num_classes=3).state_dict(), paths[-1])
    return paths


def _run(args, capsys):
    return run_main(args, capsys)


def test_every_shipped_preset_is_valid_and_has_the_openood_groups():
    presets = load_presets()
    assert {"ddu", "openood-cifar10", "openood-cifar100", "openood-imagenet200", "openood-imagenet1k"} <= set(presets)
    c10 = presets["openood-cifar10"].sets
    assert set(c10["near"]) == {"cifar100", "tin"} and set(c10["far"]) == {"mnist", "svhn", "textures", "places365"}
    assert set(presets["openood-cifar100"].sets["near"]) == {"cifar10", "tin"}
    for name in ("openood-imagenet200", "openood-imagenet1k"):
        sets = presets[name].sets
        assert set(sets["near"]) == {"ssb_hard", "ninco"} and set(sets["far"]) == {"inaturalist", "textures", "openimage_o"}
    assert set(presets["ddu"].sets["near"]) | set(presets["ddu"].sets["far"]) == {"cifar100", "svhn"}


def test_bench_ddu_table_equals_the_per_set_rows(tmp_path, ddu_sets, ckpts, capsys, one_torch_thread):
    root, sets = ddu_sets
    out = tmp_path / "runs"
    args = ["bench", "ddu", *map(str, ckpts), "--data-root", str(root), *OPTS, "--scorers", "energy,msp,mahalanobis",
            "--out", str(out), "--no-cache", "-q", "--no-plot"]
    for name, spec in sets.items():
        args += ["--set", f"{name}={spec}"]
    code, text, err = _run(args, capsys)
    assert code == 0, err
    assert "Near / far OOD, each scorer at its best layer" in text and "auroc_near" in text
    ood = pd.read_csv(out / "ood.csv", keep_default_na=False)
    assert dict(ood.drop_duplicates("ood")[["ood", "ood_group"]].values) == {"cifar100": "near", "svhn": "far"}
    table = pd.read_csv(out / "bench.csv")
    assert set(table["preset"]) == {"ddu"} and table["run_id"].nunique() == 2
    # independent check: the penultimate rows' near/far means are the plain means of the per-set rows
    for _, row in table[table["layer_choice"] == "penultimate"].iterrows():
        rows = ood[(ood.run_id == row.run_id) & (ood.scorer == row.scorer) & (ood.layer == row.layer)]
        for group in ("near", "far"):
            part = rows[rows.ood_group == group]
            assert row[f"auroc_{group}"] == pytest.approx(part["auroc"].mean(), abs=1e-12)
            assert row[f"fpr95_{group}"] == pytest.approx(part["fpr95"].mean(), abs=1e-12)
    # 'best': the layer with the highest mean AUROC over every OOD set of the run
    best = table[(table.layer_choice == "best") & (table.scorer == "mahalanobis")]
    for _, row in best.iterrows():
        rows = ood[(ood.run_id == row.run_id) & (ood.scorer == "mahalanobis")]
        assert row.layer == rows.groupby("layer")["auroc"].mean().idxmax()


def test_missing_sets_are_listed_in_one_line(tmp_path, ckpts, capsys):
    code, text, err = _run(["bench", "openood-cifar10", str(ckpts[0]), "--data-root", str(tmp_path / "empty"),
                            *OPTS, "--out", str(tmp_path / "runs"), "-q"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    for name in ("svhn", "places365", "tin", "cifar10", "--set NAME=SPEC", str(tmp_path / "empty")):
        assert name in err
    assert not (tmp_path / "runs").exists()


def test_set_names_must_belong_to_the_preset(tmp_path, ckpts, capsys):
    code, _, err = _run(["bench", "ddu", str(ckpts[0]), "--set", "places=x.npz", *OPTS, "-q",
                         "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and "not sets of preset 'ddu'" in err and "svhn" in err
    code, _, err = _run(["bench", "nope", str(ckpts[0]), "-q", "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and "unknown benchmark preset" in err and "openood-cifar10" in err


def test_full_spectrum_counts_the_shifted_id_set_as_id(tmp_path, ddu_sets, ckpts, monkeypatch, one_torch_thread):
    root, sets = ddu_sets
    preset = tmp_path / "presets.yaml"
    preset.write_text(
        "presets:\n  toy:\n    id: {cifar10: cifar10:test}\n    fit: {cifar10-train: cifar10:train}\n"
        "    near: {cifar100: cifar100:test}\n    far: {svhn: svhn:test}\n    csid: {shifted: x.npz}\n")
    monkeypatch.setenv("NCPROBE_BENCHMARKS", str(preset))
    shifted = _npz(tmp_path / "shifted.npz", 12, 3, 7, shift=5)
    kw = {"data_root": root, "scorers": "energy,msp", "use_cache": False, "progress": False, "plot": False,
          "checkpoint_options": CKPT_OPTS}
    plain = bench("toy", [str(ckpts[0])], sets=sets, **kw)
    full = bench("toy", [str(ckpts[0])], sets={**sets, "shifted": shifted}, full_spectrum=True, **kw)
    p, f = plain.runs[0], full.runs[0]
    assert set(f.ood["id"]) == {"cifar10+shifted"} and (f.ood["n_id"] == 30 + 12).all()
    assert f.id_accuracy == p.id_accuracy  # accuracy stays the ID set's own
    # independent AUROC: ID side = ID then csID scores, computed from the features with sklearn
    from sklearn.metrics import roc_auc_score

    feats = f.extras
    logits_id = np.concatenate([feats["features"]["id"]["logits"], feats["features"]["csid"][0]["logits"]])
    logits_ood = feats["features"]["ood"][1]["logits"]  # svhn
    energy = lambda z: np.log(np.exp(z.astype(np.float64)).sum(1))  # noqa: E731
    want = roc_auc_score(np.r_[np.ones(len(logits_id)), np.zeros(len(logits_ood))],
                         np.r_[energy(logits_id), energy(logits_ood)])
    got = f.ood[(f.ood.scorer == "energy") & (f.ood.ood == "svhn")]["auroc"].item()
    assert got == pytest.approx(want, abs=1e-9)


def test_real_ddu_and_openood_cifar10_on_shared_data(shared_data, tmp_path, capsys):
    """The two presets on the real ResNet-20 with the sets pointed at ../shared/data (subsampled
    for time); SVHN, absent there, is a torchvision-format file built from MNIST digits."""
    root = tmp_path / "data"
    root.mkdir()
    mnist = np.load(shared_data / "mnist_test.npz")
    y = np.where(mnist["y"][:300] == 0, 10, mnist["y"][:300]).astype(np.uint8)[:, None]
    scipy.io.savemat(root / "test_32x32.mat", {"X": np.ascontiguousarray(mnist["x"][:300].transpose(1, 2, 3, 0)), "y": y})
    ck = str(shared_data / "checkpoints" / "resnet20-12fca82f.th")
    sets = {"cifar10": "cifar10_test.npz@n=600", "cifar10-train": "cifar10_train.npz@n=1000",
            "cifar100": "cifar100mix_test.npz@n=300", "tin": "tin_val_resize.npz@n=300",
            "mnist": "mnist_test.npz@n=300", "textures": "textures.npz@n=300",
            "places365": "fashionmnist_test.npz@n=300"}  # no Places365 here: a stand-in far set
    for preset, names in (("ddu", ("cifar10", "cifar10-train", "cifar100")), ("openood-cifar10", tuple(sets))):
        out = tmp_path / preset
        args = ["bench", preset, ck, "--data-root", str(root), "--scorers", "energy,mahalanobis,knn", "-q",
                "--no-plot", "--out", str(out), "--cache", str(tmp_path / "cache")]
        for name in names:
            args += ["--set", f"{name}={shared_data / sets[name]}"]
        code, text, err = _run(args, capsys)
        assert code == 0, err
        table = pd.read_csv(out / "bench.csv")
        energy = table[(table.scorer == "energy") & (table.layer_choice == "penultimate")].iloc[0]
        assert 0.8 < energy.auroc_near < 0.95 and energy.auroc_far > 0.85  # a trained CIFAR-10 ResNet
        ood = pd.read_csv(out / "ood.csv", keep_default_na=False)
        assert set(ood["ood_group"]) == {"near", "far"}


def test_a_broken_presets_file_is_one_line(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "presets.yaml"
    monkeypatch.setenv("NCPROBE_BENCHMARKS", str(bad))
    for text, expect in (("presets: [unclosed", "cannot read the benchmark presets"),
                         ("presets:\n  toy:\n    id: {a: x.npz}\n    near: {b: y.npz}\n", "needs exactly one fit set"),
                         ("presets:\n  toy:\n    id: {a: x.npz}\n    fit: {f: z.npz}\n    nearr: {b: y.npz}\n",
                          "unknown keys nearr")):
        bad.write_text(text)
        code, _, err = _run(["bench", "toy", "m.pt", "--out", str(tmp_path / "runs")], capsys)
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
