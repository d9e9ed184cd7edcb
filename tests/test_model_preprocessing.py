"""The model's own preprocessing of image files: timm's pretrained_cfg and torchvision's
weights.transforms(), checked against those libraries' own transforms; the feature-cache key; the
inspect rows; DataLoader workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from timm.data import create_transform, resolve_data_config

from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.loader import preprocessing_from_config
from ncprobe.cli import main
from ncprobe.data import batch_loader, load_dataset
from ncprobe.data.transforms import Preprocess, Preprocessing
from ncprobe.features import extract_features
from ncprobe.models.external import timm_eval_config
from ncprobe.models.families.torchvision_models import tv_eval_config

# (H, W) of the generated images: landscape, portrait, square at the crop, smaller than the crop, odd
SIZES = ((300, 200), (200, 300), (224, 224), (100, 150), (257, 511), (240, 241))
PIXEL = 1 / 255 + 1e-6  # PIL rounding: one grey level, in [0, 1] units


@pytest.fixture(autouse=True)
def _one_thread(empty_registry, one_torch_thread):
    """No checkpoints.yaml entries and one torch thread (conftest's fixtures) for every test here."""
    yield


def _smooth(rng, h, w):
    """A photo-like image (smooth gradients plus noise), so JPEG keeps it close to itself."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1), (xx + yy) * 127.0 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of JPEG and PNG files of the SIZES, in two classes."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("imgs")
    for i, (h, w) in enumerate(SIZES):
        cls = root / ("a" if i % 2 else "b")
        cls.mkdir(exist_ok=True)
        img = Image.fromarray(_smooth(rng, h, w))
        img.save(cls / f"{i}.jpg", quality=90) if i % 2 else img.save(cls / f"{i}.png")
    return root


def _ncprobe_batch(source, pre: Preprocess) -> torch.Tensor:
    """ncprobe's input tensors: the loader's decode + resize + crop, then Preprocess (normalize)."""
    return torch.cat([pre(x) for x, _ in batch_loader(source, 4, preprocess=[pre])])


def _reference(source, transform) -> torch.Tensor:
    """The library's own transform of each file, opened and converted to RGB as it expects."""
    out = []
    for path in source.load_item.paths:
        with Image.open(path) as im:
            out.append(transform(im.convert("RGB")))
    return torch.stack(out)


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, std) -> None:
    assert ours.shape == ref.shape
    std = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    diff = ((ours - ref) * std).abs().max().item()  # back in [0, 1] pixel units
    assert diff <= PIXEL, diff


@pytest.mark.parametrize("cfg", [
    {},  # resnet18's own pretrained_cfg: crop_pct 0.95, bicubic, 224
    {"crop_pct": 0.875, "interpolation": "bilinear"},
    {"crop_pct": 1.0, "interpolation": "bicubic"},
    {"crop_pct": 0.9, "interpolation": "bilinear", "crop_mode": "squash"},
    {"crop_pct": 0.9, "interpolation": "bicubic", "crop_mode": "border", "mean": (0.5, 0.25, 0.75)},
    {"crop_pct": 0.9, "interpolation": "bilinear", "input_size": (3, 160, 224)},
    {"crop_pct": 0.8, "interpolation": "nearest", "input_size": (3, 192, 128), "crop_mode": "border"},
])
def test_timm_pretrained_cfg_matches_timms_eval_transform(folder, cfg):
    model = timm.create_model("resnet18", pretrained=False, num_classes=2)
    model.pretrained_cfg = {**model.pretrained_cfg, **cfg}
    data_cfg = resolve_data_config({}, model=model)
    reference = create_transform(**data_cfg)
    prep = preprocessing_from_config(timm_eval_config(model.pretrained_cfg))
    assert prep.crop == tuple(data_cfg["input_size"][1:])
    source = load_dataset(str(folder))
    pre = Preprocess(data_cfg["mean"], data_cfg["std"], data_cfg["input_size"], items=prep)
    _assert_close(_ncprobe_batch(source, pre), _reference(source, reference), data_cfg["std"])


def test_timm_checkpoint_gets_its_model_config(folder, tmp_path):
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    path = tmp_path / "timm_r18.pt"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path, arch="timm:resnet18")
    assert ckpt.origin["preprocessing"] == "model-config"
    data_cfg = resolve_data_config({}, model=model)
    assert ckpt.preprocessing.crop_pct == data_cfg["crop_pct"]
    assert ckpt.preprocessing.interpolation == data_cfg["interpolation"]
    source = load_dataset(str(folder))
    pre = Preprocess(ckpt.mean, ckpt.std, ckpt.input_size, items=ckpt.preprocessing)
    _assert_close(_ncprobe_batch(source, pre), _reference(source, create_transform(**data_cfg)), ckpt.std)

    # another input size (a flag): the resize follows crop_pct, as timm's transform at that size does
    small = load_checkpoint(path, arch="timm:resnet18", input_size="3,160,160")
    ref_cfg = resolve_data_config({"input_size": (3, 160, 160)}, model=model)
    pre = Preprocess(small.mean, small.std, small.input_size, items=small.preprocessing)
    _assert_close(_ncprobe_batch(source, pre), _reference(source, create_transform(**ref_cfg)), small.std)


def test_torchvision_checkpoint_gets_its_weights_transforms(folder, tmp_path):
    path = tmp_path / "tv_r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "tv:resnet18" and ckpt.origin["preprocessing"] == "model-config"
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    reference = weights.transforms()
    assert ckpt.preprocessing.resize == tuple(reference.resize_size * 2)
    assert ckpt.preprocessing.crop == tuple(reference.crop_size * 2)
    source = load_dataset(str(folder))
    pre = Preprocess(ckpt.mean, ckpt.std, ckpt.input_size, items=ckpt.preprocessing)
    _assert_close(_ncprobe_batch(source, pre), _reference(source, reference), reference.std)


@pytest.mark.parametrize("name, weights, sha", [
    ("tv:efficientnet_b1", torchvision.models.EfficientNet_B1_Weights.IMAGENET1K_V1, ""),  # bicubic, 256 -> 240
    ("tv:resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1, ""),
    ("tv:resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V2, "11ad3fa6" + "0" * 56),  # by file hash
    ("tv:swin_t", torchvision.models.Swin_T_Weights.IMAGENET1K_V1, ""),
])
def test_torchvision_weights_transforms_without_building_the_model(folder, name, weights, sha):
    reference = weights.transforms()
    prep = preprocessing_from_config(tv_eval_config(name, sha))
    assert weights.name in prep.config
    source = load_dataset(str(folder))
    pre = Preprocess(reference.mean, reference.std, tuple(reference.crop_size * 2), items=prep)
    _assert_close(_ncprobe_batch(source, pre), _reference(source, reference), reference.std)


def test_models_with_different_transforms_share_one_loader(folder):
    source = load_dataset(str(folder))
    timm_prep = preprocessing_from_config(timm_eval_config(timm.create_model("resnet18").pretrained_cfg))
    tv_prep = preprocessing_from_config(tv_eval_config("tv:resnet18"))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    a, b, c = (Preprocess(mean, std, 224, items=p) for p in (timm_prep, tv_prep, None))
    both = [(a(x), b(x), c(x)) for x, _ in batch_loader(source, 4, preprocess=[a, b, c])]
    assert (a.variant, b.variant, c.variant) == (0, 1, 2)
    for module, k in ((a, 0), (b, 1), (c, 2)):
        alone = torch.cat([module(x) for x, _ in batch_loader(source, 4, preprocess=[module])])
        assert module.variant is None
        torch.testing.assert_close(torch.cat([t[k] for t in both]), alone, rtol=0, atol=0)
    # the default transform is ncprobe's own: shorter side to fit, then the centre crop
    default = torch.cat([c(x) for x, _ in batch_loader(source, 4, size=224)])
    torch.testing.assert_close(torch.cat([t[2] for t in both]), default, rtol=0, atol=0)


def test_preprocessing_is_part_of_the_cache_key_for_files_only(folder, small_ckpt, tmp_path):
    ckpt = load_checkpoint(small_ckpt)
    assert ckpt.origin["preprocessing"] == "default" and ckpt.preprocessing.resize is None
    files = load_dataset(str(folder))
    cache = tmp_path / "cache"
    first = extract_features(ckpt, files, cache_dir=cache, progress=False, device="cpu")
    again = extract_features(ckpt, files, cache_dir=cache, progress=False, device="cpu")
    assert not first.from_cache and again.from_cache
    crop = tuple(ckpt.input_size[-2:])
    ckpt.preprocessing_config = Preprocessing.from_crop_pct(crop, 0.5, interpolation="bicubic")
    other = extract_features(ckpt, files, cache_dir=cache, progress=False, device="cpu")
    assert not other.from_cache
    assert not np.allclose(other["logits"], first["logits"])
    # in-memory arrays are resized on the device, whatever the file transform says: same key, same features
    arrays = tmp_path / "arrays.npz"
    rng = np.random.default_rng(3)
    np.savez(arrays, x=rng.integers(0, 256, size=(6, 40, 30, 3), dtype=np.uint8), y=np.arange(6) % 4)
    in_memory = load_dataset(str(arrays))
    with_config = extract_features(ckpt, in_memory, cache_dir=cache, progress=False, device="cpu")
    ckpt.preprocessing_config = None
    without = extract_features(ckpt, in_memory, cache_dir=cache, progress=False, device="cpu")
    assert without.from_cache
    np.testing.assert_array_equal(without["logits"], with_config["logits"])


def test_workers_give_the_features_of_the_main_process(folder, small_ckpt):
    ckpt = load_checkpoint(small_ckpt)
    ckpt.preprocessing_config = Preprocessing.from_crop_pct(tuple(ckpt.input_size[-2:]), 0.875,
                                                            interpolation="bicubic")
    source = load_dataset(str(folder))
    kwargs = {"use_cache": False, "progress": False, "device": "cpu", "batch_size": 2}
    serial = extract_features(ckpt, source, workers=0, **kwargs)
    parallel = extract_features(ckpt, source, workers=2, **kwargs)
    assert serial.layers == parallel.layers
    for layer in serial.layers:
        np.testing.assert_array_equal(parallel[layer], serial[layer])
    np.testing.assert_array_equal(parallel.labels, serial.labels)
    np.testing.assert_array_equal(serial.labels, source.labels)


def test_workers_flag_reaches_the_extractor(folder, small_ckpt, capsys, monkeypatch):
    import ncprobe.features.extract as fx

    seen = []
    real = fx.batch_loader
    monkeypatch.setattr(fx, "batch_loader", lambda *a, **k: seen.append(k["workers"]) or real(*a, **k))
    with pytest.raises(SystemExit) as info:
        main(["eval", str(small_ckpt), "--data", str(folder), "--workers", "2", "--no-cache", "--quiet",
              "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--device", "cpu"])
        raise SystemExit(0)
    assert info.value.code == 0, capsys.readouterr().err
    assert seen and set(seen) == {2}


def test_inspect_shows_the_preprocessing_and_its_origin(tmp_path, capsys):
    path = tmp_path / "tv_r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), path)
    reference = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    with pytest.raises(SystemExit) as info:
        main(["inspect", str(path)])
        raise SystemExit(0)
    out = capsys.readouterr().out
    assert info.value.code == 0
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert f"shorter side to {reference.resize_size[0]}" in rows["resize"] and "model-config" in rows["resize"]
    assert f"centre {reference.crop_size[0]} x {reference.crop_size[0]}" in rows["crop"]
    assert reference.interpolation.value in rows["interpolation"] and "model-config" in rows["interpolation"]
    with pytest.raises(SystemExit):
        main(["inspect", str(path), "--json"])
        raise SystemExit(0)
    info = json.loads(capsys.readouterr().out)
    assert info["preprocessing"]["resize"] == reference.resize_size * 2
    assert info["origin"]["preprocessing"] == "model-config"
