"""Dataset spec strings: ``[NAME=]SOURCE[:SPLIT][@key=val[,key=val...]]``.

Examples::

    cifar10                      torchvision CIFAR-10, the caller's default split (usually test)
    cifar10:train@classes=0-5    its training split, classes 0..5 only (labels unchanged)
    svhn:test@n=2000,seed=1      a seeded subsample of 2000 SVHN test images
    near=data/cifar100.npz       an .npz file, shown as 'near' in tables
    noise:uniform@n=500,size=64  synthetic uniform-noise images
    ~/images/ood                 an image folder (class sub-folders give labels; flat = unlabelled)
    lists/test.txt@root=~/imgs   an image list ('path label' lines), paths relative to ~/imgs

Parsing rules, in order:

1. Options: the text after the last ``@`` is an option list when it looks like ``key=val,...``
   (and holds no path separator outside a ``root=`` value; a ``root`` path cannot hold ``,``, ``=``
   or ``@``). ``cifar10@n`` (a known name followed by something that is not
   ``key=val``) is an error; otherwise the ``@`` is taken as part of a path.
2. ``NAME=``: a leading ``NAME=`` (no ``/``, ``:``, ``@`` in NAME) sets the display name, unless the
   whole text is an existing path.
3. ``:SPLIT``: the text after the last ``:`` is the split (``train``, ``test``, ``extra``, ``val``,
   ``unlabeled``, or the noise kind ``gaussian``/``uniform``) unless the whole source is an
   existing path.

Option values are validated here (types, ranges); which options a given source accepts is checked
when it is loaded (:func:`ncprobe.data.load_dataset`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from ..errors import DatasetError

#: every option a spec may carry, in the order they are written back out
OPTION_ORDER = ("classes", "n", "seed", "size", "channels", "unlabelled", "root")
OPTION_HELP = {
    "classes": "keep these class ids, e.g. classes=0-5 or classes=0-4+7 (labels unchanged)",
    "n": "seeded random subsample of n samples",
    "seed": "seed for n / noise / patches (default 0)",
    "size": "image side for noise and patches (default 32)",
    "channels": "1 or 3 channels for noise and patches (default 3)",
    "unlabelled": "unlabelled=1 lets an .npz without a 'y' array load with labels -1",
    "root": "folder the paths of an image list (.txt) are relative to (default: the list's folder)",
}

_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
_OPTS_RE = re.compile(rf"^\s*{_KEY}\s*=[^,=@]*(,\s*{_KEY}\s*=[^,=@]*)*\s*$")
_NAME_RE = re.compile(r"^([^=/\\@:]+)=(.+)$", re.S)
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_+\-]+$")
_ROOT_VALUE_RE = re.compile(r"(^|,)\s*root\s*=[^,=@]*", re.I)


def _has_separator(tail: str) -> bool:
    """A path separator in an option list, outside the value of ``root=`` (which is a path)."""
    rest = _ROOT_VALUE_RE.sub(r"\1", tail)
    return "/" in rest or "\\" in rest


def normalize_name(name: str) -> str:
    """Key used to match dataset names: lower case, '-' and '_' dropped ('CIFAR-10' -> 'cifar10')."""
    return name.strip().lower().replace("-", "").replace("_", "")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec. ``options`` holds parsed values (classes: tuple of ints)."""

    text: str
    source: str
    split: str | None = None
    name: str | None = None
    options: dict = field(default_factory=dict)

    def option(self, key: str, default=None):
        return self.options.get(key, default)

    def options_string(self, keys=None) -> str:
        """Canonical ``key=val,...`` for the options present (in OPTION_ORDER), '' when none."""
        parts = []
        for key in OPTION_ORDER:
            if key in self.options and (keys is None or key in keys):
                parts.append(f"{key}={format_option(key, self.options[key])}")
        return ",".join(parts)

    def to_string(self, *, with_name: bool = True) -> str:
        """The spec written back out in canonical form (parses to an equal spec)."""
        out = self.source if self.split is None else f"{self.source}:{self.split}"
        opts = self.options_string()
        if opts:
            out += "@" + opts
        if with_name and self.name:
            out = f"{self.name}={out}"
        return out

    def with_(self, **changes) -> DatasetSpec:
        spec = replace(self, **changes)
        return replace(spec, text=spec.to_string())


def format_option(key: str, value) -> str:
    if key == "classes":
        return format_classes(value)
    if key == "unlabelled":
        return "1" if value else "0"
    return str(value)


MAX_CLASS_ID = 1_000_000  # the largest label the readers accept (see ncprobe.data.limits)


def parse_classes(text: str) -> tuple[int, ...]:
    """'0-4+7' -> (0, 1, 2, 3, 4, 7); ranges with '-', lists with '+' (or ';')."""
    out: set[int] = set()
    for part in re.split(r"[+;]", text.strip()):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part) or re.fullmatch(r"(\d+)", part)
        if not m:
            raise DatasetError(
                f"bad classes value {text!r}: write class ids as ranges and lists, e.g. classes=0-5 "
                "or classes=0-4+7"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.lastindex == 2 else lo
        if hi < lo:
            raise DatasetError(f"bad classes range {part!r}: write low-high, e.g. classes=0-5")
        if hi >= MAX_CLASS_ID:  # checked before expanding: 0-99999999999 must not build a huge set
            raise DatasetError(f"bad classes range {part!r}: class ids go up to {MAX_CLASS_ID - 1}")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def format_classes(classes) -> str:
    """(0, 1, 2, 3, 4, 7) -> '0-4+7' (inverse of :func:`parse_classes`)."""
    ids = sorted(set(int(c) for c in classes))
    runs: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        runs.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return "+".join(runs)


def _int_option(key: str, raw: str, *, minimum: int | None = None, choices=None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise DatasetError(f"option {key}={raw!r} is not an integer; write e.g. {key}=1") from None
    if minimum is not None and value < minimum:
        raise DatasetError(f"option {key}={value} must be at least {minimum}")
    if choices is not None and value not in choices:
        raise DatasetError(f"option {key}={value} must be one of {', '.join(map(str, choices))}")
    return value


def parse_options(text: str) -> dict:
    """'classes=0-5,n=100' -> {'classes': (0,..,5), 'n': 100}; unknown keys raise DatasetError."""
    options: dict = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise DatasetError(f"malformed option {item!r}: write key=val; valid keys: {', '.join(OPTION_ORDER)}")
        key, raw = (s.strip() for s in item.split("=", 1))
        key = key.lower()
        if key == "unlabeled":
            key = "unlabelled"
        if key not in OPTION_HELP:
            raise DatasetError(f"unknown dataset option {key!r}; valid options: {', '.join(OPTION_ORDER)}")
        if key in options:
            raise DatasetError(f"dataset option {key!r} given twice; give it once")
        if raw == "":
            raise DatasetError(f"dataset option {key!r} has no value; write {key}=VALUE")
        if key == "classes":
            options[key] = parse_classes(raw)
        elif key in ("n", "size"):
            options[key] = _int_option(key, raw, minimum=1)
        elif key == "seed":
            options[key] = _int_option(key, raw, minimum=0)
        elif key == "channels":
            options[key] = _int_option(key, raw, choices=(1, 3))
        elif key == "root":
            options[key] = raw
        elif key == "unlabelled":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise DatasetError(f"option unlabelled={raw!r}: write unlabelled=1 or unlabelled=0")
            options[key] = raw.lower() in ("1", "true", "yes")
    return options


def parse_spec(text: str, *, known_names=()) -> DatasetSpec:
    """Parse a spec string (see module docstring). ``known_names`` helps flag malformed options."""
    if not isinstance(text, str) or not text.strip():
        raise DatasetError("empty dataset spec; give a name (e.g. cifar10), an .npz file or an image folder")
    raw = text.strip()
    known = {normalize_name(n) for n in known_names}
    main, options = raw, {}
    if "@" in raw and not os.path.exists(os.path.expanduser(raw)):
        head, tail = raw.rsplit("@", 1)
        if _OPTS_RE.match(tail) and not _has_separator(tail):
            main, options = head, parse_options(tail)
        elif not _has_separator(tail) and _base_of(head) in known:
            raise DatasetError(
                f"malformed options {tail!r} in dataset spec {raw!r}: write @key=val[,key=val]; "
                f"valid keys: {', '.join(OPTION_ORDER)}"
            )
    name = None
    m = _NAME_RE.match(main)
    if m and not os.path.exists(os.path.expanduser(main)):
        name, main = m.group(1).strip(), m.group(2).strip()
        if not name:
            name = None
    if not main:
        raise DatasetError(f"dataset spec {raw!r} names no source; give e.g. cifar10 or a file path")
    source, split = main, None
    if ":" in main and not os.path.exists(os.path.expanduser(main)):
        src, sp = main.rsplit(":", 1)
        if src and _SPLIT_RE.match(sp):
            source, split = src, sp.lower()
    return DatasetSpec(text=raw, source=source, split=split, name=name, options=options)


def _base_of(head: str) -> str:
    m = _NAME_RE.match(head)
    if m:
        head = m.group(2)
    return normalize_name(head.split(":", 1)[0])
