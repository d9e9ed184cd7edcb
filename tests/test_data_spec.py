"""Spec grammar: [NAME=]SOURCE[:SPLIT][@key=val,...]."""

from __future__ import annotations

import pytest

from ncprobe.data.spec import format_classes, parse_classes, parse_spec
from ncprobe.errors import DatasetError

KNOWN = ("cifar10", "digits", "noise")


@pytest.mark.parametrize(
    "text, source, split, name, options",
    [
        ("cifar10", "cifar10", None, None, {}),
        ("cifar10:train", "cifar10", "train", None, {}),
        ("CIFAR10:Train", "CIFAR10", "train", None, {}),
        ("near=cifar100:test@n=500,seed=3", "cifar100", "test", "near", {"n": 500, "seed": 3}),
        ("digits@classes=0-4+7", "digits", None, None, {"classes": (0, 1, 2, 3, 4, 7)}),
        ("noise:uniform@n=10,size=64,channels=1", "noise", "uniform", None,
         {"n": 10, "size": 64, "channels": 1}),
        ("data/x.npz@unlabelled=1", "data/x.npz", None, None, {"unlabelled": True}),
        ("ood=data/a=b/x.npz", "data/a=b/x.npz", None, "ood", {}),
        ("runs/a=b.npz", "runs/a=b.npz", None, None, {}),
        ("dir@2/x.npz", "dir@2/x.npz", None, None, {}),
        ("svhn:extra@ n = 5 , seed=1", "svhn", "extra", None, {"n": 5, "seed": 1}),
    ],
)
def test_parse_spec(text, source, split, name, options):
    spec = parse_spec(text, known_names=KNOWN)
    assert (spec.source, spec.split, spec.name, spec.options) == (source, split, name, options)


def test_existing_path_with_colon_and_at_is_not_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd:name@v1.npz").write_bytes(b"")
    spec = parse_spec("odd:name@v1.npz")
    assert (spec.source, spec.split, spec.options) == ("odd:name@v1.npz", None, {})


def test_to_string_round_trip():
    for text in ["cifar10:train@classes=0-5,n=100", "near=svhn:test@seed=2", "noise:gaussian@size=16"]:
        spec = parse_spec(text)
        again = parse_spec(spec.to_string())
        assert (again.source, again.split, again.name, again.options) == (
            spec.source, spec.split, spec.name, spec.options)
    # canonical option order and classes compression
    assert parse_spec("cifar10@n=5,classes=7+0-4+3").to_string() == "cifar10@classes=0-4+7,n=5"


def test_classes_parse_and_format():
    assert parse_classes("0-2+5+7-8") == (0, 1, 2, 5, 7, 8)
    assert parse_classes("3") == (3,)
    assert format_classes([8, 0, 1, 2, 5, 7]) == "0-2+5+7-8"
    for text in ["0-2+5+7-8", "3", "0-9", "1+3+5"]:
        assert format_classes(parse_classes(text)) == text


@pytest.mark.parametrize(
    "text, words",
    [
        ("cifar10@bogus=1", ["unknown dataset option 'bogus'", "classes, n, seed"]),
        ("cifar10@n=abc", ["not an integer"]),
        ("cifar10@n=0", ["at least 1"]),
        ("cifar10@channels=2", ["1, 3"]),
        ("cifar10@classes=a-b", ["bad classes value"]),
        ("cifar10@classes=5-2", ["bad classes range"]),
        ("cifar10@n=1,n=2", ["given twice"]),
        ("cifar10@n", ["malformed options"]),
        ("   ", ["empty dataset spec"]),
    ],
)
def test_bad_specs_raise_one_line(text, words):
    with pytest.raises(DatasetError) as info:
        parse_spec(text, known_names=KNOWN)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg
