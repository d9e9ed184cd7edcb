"""Image-list files (OpenOOD's benchmark_imglist format): parsing, roots, options, fingerprints, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from ncprobe.data import fit_spec_for, load_dataset, parse_spec
from ncprobe.data.imglist import parse_line
from ncprobe.errors import DatasetError


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture
def openood(tmp_path):
    """An OpenOOD-like layout: data/images_classic/<set>/... and data/benchmark_imglist/<set>/*.txt."""
    rng = np.random.default_rng(0)
    images = tmp_path / "data" / "images_classic"
    rows, arrays = [], {}
    for i in range(7):
        rel = f"toy/test/{'cat' if i % 2 else 'dog'}/{i:04d}.png"
        arr = rng.integers(0, 256, size=(6 + i, 9, 3), dtype=np.uint8)
        _save(images / rel, arr)
        rows.append((rel, i % 3))
        arrays[rel] = arr
    lists = tmp_path / "data" / "benchmark_imglist" / "toy"
    lists.mkdir(parents=True)
    text = "".join(f"{rel} {label}\n" for rel, label in rows)
    (lists / "test_toy.txt").write_text(text)
    return tmp_path, images, lists / "test_toy.txt", rows, arrays


def test_lines_read_in_order_with_labels_and_pixels(openood):
    _, images, listed, rows, arrays = openood
    ds = load_dataset(f"{listed}@root={images}")
    assert ds.images is None and ds.name == "test_toy" and ds.meta["kind"] == "imglist"
    np.testing.assert_array_equal(ds.labels, [label for _, label in rows])
    assert ds.labelled and ds.num_classes == 3 and ds.classes is None
    for i, (rel, _) in enumerate(rows):
        with Image.open(images / rel) as im:  # independent decode of the listed file
            np.testing.assert_array_equal(ds.image(i), np.asarray(im.convert("RGB")))
        np.testing.assert_array_equal(ds.image(i), arrays[rel])


def test_root_defaults_to_the_list_folder_and_may_be_relative(openood, monkeypatch):
    tmp, images, listed, rows, _ = openood
    beside = images / "local.txt"  # a list next to its images needs no root
    beside.write_text("".join(f"{rel} {label}\n" for rel, label in rows[:3]))
    np.testing.assert_array_equal(load_dataset(str(beside)).labels, [label for _, label in rows[:3]])

    monkeypatch.chdir(tmp)
    rel_root = load_dataset(f"{listed}@root=data/images_classic")  # relative to the working directory
    np.testing.assert_array_equal(rel_root.labels, [label for _, label in rows])
    monkeypatch.chdir(tmp / "data")
    under = load_dataset("benchmark_imglist/toy/test_toy.txt@root=images_classic", data_root=tmp / "nowhere")
    assert len(under) == len(rows)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the list nor the root here: both found under data_root
    via_root = load_dataset("benchmark_imglist/toy/test_toy.txt@root=images_classic", data_root=tmp / "data")
    assert len(via_root) == len(rows) and via_root.meta["root"] == str(images.resolve())


def test_unlabelled_lines_spaces_comments_and_blank_lines(tmp_path):
    rng = np.random.default_rng(1)
    names = ["a b/c d.png", "plain.png", "x 1.png"]
    for name in names:
        _save(tmp_path / name, rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8))
    (tmp_path / "ood.txt").write_text(
        "# an OOD list\n\na b/c d.png -1\nplain.png\r\nx 1.png 4\n   \n"
    )
    ds = load_dataset(str(tmp_path / "ood.txt"))
    np.testing.assert_array_equal(ds.labels, [-1, -1, 4])
    assert not ds.labelled
    with Image.open(tmp_path / "a b" / "c d.png") as im:
        np.testing.assert_array_equal(ds.image(0), np.asarray(im.convert("RGB")))
    # the label is what follows the last space; OpenOOD's lists ('path label') read the same
    assert parse_line("images_largescale/imagenet_1k/val/x.JPEG 65\n") == ("images_largescale/imagenet_1k/val/x.JPEG", 65)
    assert parse_line("dir/file with spaces.jpg") == ("dir/file with spaces.jpg", -1)
    assert parse_line("  # comment") is None and parse_line("\n") is None


def test_options_n_classes_and_display_name(openood):
    _, images, listed, rows, _ = openood
    labels = np.array([label for _, label in rows])
    only = load_dataset(f"{listed}@root={images},classes=1")
    np.testing.assert_array_equal(only.labels, labels[labels == 1])
    assert only.name == "test_toy@classes=1"  # the root is not part of the shown name
    sub = load_dataset(f"{listed}@root={images},n=3,seed=2")
    idx = np.sort(np.random.default_rng(2).choice(len(rows), size=3, replace=False))
    np.testing.assert_array_equal(sub.labels, labels[idx])
    assert load_dataset(f"near={listed}@root={images}").name == "near"
    spec = parse_spec(f"{listed}@root={images},n=3")
    assert spec.options == {"root": str(images), "n": 3}
    again = parse_spec(spec.to_string())
    assert (again.source, again.options, again.to_string()) == (spec.source, spec.options, spec.to_string())
    with pytest.raises(DatasetError) as e:
        load_dataset(f"{images}@root={images}")  # a folder takes no root
    assert "root" in one_line(e)


def test_fingerprint_follows_the_list_and_the_files(openood):
    _, images, listed, rows, _ = openood
    spec = f"{listed}@root={images}"
    first = load_dataset(spec).fingerprint
    assert load_dataset(spec).fingerprint == first
    listed.write_text(listed.read_text().replace(f"{rows[0][0]} {rows[0][1]}", f"{rows[0][0]} 2"))
    relabelled = load_dataset(spec).fingerprint
    assert relabelled != first
    target = images / rows[1][0]
    st = target.stat()
    _save(target, np.zeros((6, 9, 3), np.uint8))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the mtime put back
    assert load_dataset(spec).fingerprint != relabelled


def test_missing_files_malformed_lines_and_empty_lists(openood, tmp_path):
    _, images, listed, rows, _ = openood
    with pytest.raises(DatasetError) as e:
        load_dataset(str(listed))  # root defaults to the list's folder: nothing is there
    msg = one_line(e)
    assert rows[0][0].split("/")[-1] in msg and f"and {len(rows) - 1} more of the {len(rows)} listed" in msg
    assert "@root=DIR" in msg
    (images / rows[2][0]).unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(f"{listed}@root={images}")
    msg = one_line(e)
    assert rows[2][0] in msg and "more" not in msg

    bad = tmp_path / "bad.txt"
    bad.write_text("a.png 0\nb.png 1\nc.png -3\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(str(bad))
    assert "line 3" in one_line(e)
    bad.write_text("a.png 0\n\n{'label': 1}\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(str(bad))
    assert "line 3" in one_line(e)
    bad.write_text("# nothing\n\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(str(bad))
    assert "lists no images" in one_line(e)
    with pytest.raises(DatasetError) as e:
        load_dataset(f"{listed}@root={tmp_path / 'no_such_dir'}")
    assert "not a folder" in one_line(e)


def test_fit_spec_for_finds_the_train_list(openood):
    _, images, listed, rows, _ = openood
    train = listed.with_name("train_toy.txt")
    train.write_text(listed.read_text())
    spec = fit_spec_for(f"{listed}@root={images},classes=0-1")
    assert spec == f"{train}@classes=0-1,root={images}"
    np.testing.assert_array_equal(load_dataset(spec).labels, load_dataset(f"{listed}@root={images},classes=0-1").labels)
