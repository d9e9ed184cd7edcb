"""Image-list files: OpenOOD's ``benchmark_imglist/*.txt``, one ``relative/path.jpg label`` a line.

A line is a path, a space and an integer label (``-1`` = unknown, as in OpenOOD's OOD lists); a
line whose last space-separated word is not an integer is a path alone (label -1), so a path may
hold spaces (the label is what follows the *last* space). Blank lines and lines starting with
``#`` are skipped. Paths are relative to ``root`` (absolute ones are taken as they are): the
``@root=DIR`` option, else the folder holding the list file. Labels are class ids
0 <= y < 1,000,000, or -1.

The list is read once, every image is checked to exist (one line names the first missing one and
how many are missing), and the images are decoded one by one when batches are read, as for image
folders (:class:`~ncprobe.data.items.ImageFileLoader`).

Difference from OpenOOD's ``ImglistDataset``: it splits a line at its *first* space and parses the
rest as an int or as a Python dict literal (``{'label': 3, ...}``); ncprobe splits at the last
space and reads only an integer label. Both read every list of OpenOOD v1.5 (``path label``) the
same way; dict-valued lines are refused here (malformed line), paths with spaces are refused there.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .items import ImageFileLoader
from .limits import os_error, shown
from .tvsets import RawSet

MAX_LABEL = 1_000_000  # labels are class ids below this, or -1 (as in ncprobe.data.local)
MAX_LIST_BYTES = 1 << 30  # a list file larger than this is not an image list
_LABEL = re.compile(r"-?[0-9]+")


def parse_line(line: str) -> tuple[str, int] | None:
    """(path, label) of one list line, None for a blank or comment line; raises ValueError when the
    line is malformed."""
    text = line.rstrip("\r\n").strip()
    if not text or text.startswith("#"):
        return None
    head, sep, tail = text.rpartition(" ")
    if sep and _LABEL.fullmatch(tail):
        label, path = int(tail), head.rstrip()
        if not path:
            raise ValueError("the line has a label but no path")
        if label < -1 or label >= MAX_LABEL:
            raise ValueError(f"label {label} is not a class id 0-{MAX_LABEL - 1} or -1")
        return path, label
    if text.startswith("{") or text.endswith("}"):
        raise ValueError("write 'path label' (an integer label), not a dict")
    if _LABEL.fullmatch(text):
        raise ValueError(f"{text!r} is a number, not a path")
    return text, -1


def read_lines(list_path: Path) -> list[tuple[str, int]]:
    """Every (path, label) of the list file; one-line DatasetError for a malformed or empty list."""
    try:
        size = list_path.stat().st_size
        if size > MAX_LIST_BYTES:
            raise DatasetError(f"{shown(list_path)} is {size / 1e9:.1f} GB, too large for an image list; "
                               "give a text file of 'path label' lines")
        raw = list_path.read_bytes()
    except OSError as e:
        raise os_error(e, list_path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_no = raw[: e.start].count(b"\n") + 1
        raise DatasetError(f"{shown(list_path)} line {line_no} is not valid UTF-8 text; save the list as UTF-8") from None
    if "\x00" in text:
        raise DatasetError(f"{shown(list_path)} is not a text file (it holds NUL bytes); give a text file of "
                           "'path label' lines")
    entries = []
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            entry = parse_line(line)
        except ValueError as e:
            raise DatasetError(f"{shown(list_path)} line {number} is malformed ({e}): {line.strip()[:80]!r}; "
                               "write one 'relative/path.jpg label' per line (label -1 or none when unknown)") from None
        if entry is not None:
            entries.append(entry)
    if not entries:
        raise DatasetError(f"{shown(list_path)} lists no images; write one 'relative/path.jpg label' per line")
    return entries


def _missing(paths: list[Path]) -> list[Path]:
    """The listed paths that are not readable regular files (a folder, a missing file)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            out.append(p)
            continue
        except OSError as e:
            raise os_error(e, p) from None
        if not stat.S_ISREG(st.st_mode):
            out.append(p)
    return out


def read_imglist(list_path: Path, root: Path | None = None) -> RawSet:
    """The images and labels of an image-list file, paths relative to ``root`` (default: the list's
    folder); every listed file must exist."""
    list_path = Path(list_path)
    base = Path(root) if root is not None else list_path.parent
    if root is not None and not base.is_dir():
        raise DatasetError(f"the image root {shown(base)} of {shown(list_path)} is not a folder; pass "
                           "@root=DIR, the folder the list's paths are relative to")
    entries = read_lines(list_path)
    paths = [base / rel for rel, _ in entries]
    missing = _missing(paths)
    if missing:
        more = f" and {len(missing) - 1:,} more of the {len(paths):,} listed" if len(missing) > 1 else ""
        hint = ("pass @root=DIR, the folder the list's paths are relative to" if root is None
                else "check @root=DIR, the folder the list's paths are relative to")
        raise DatasetError(f"{shown(list_path)}: {shown(missing[0])} is not a file{more}; {hint}")
    labels = np.array([label for _, label in entries], dtype=np.int64)
    return RawSet(labels=labels, files=paths, loader=ImageFileLoader(paths), classes=None)
