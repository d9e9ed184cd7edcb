"""The registry of known public checkpoints (``checkpoints.yaml``).

Found at ``$NCPROBE_REGISTRY``, else the ``checkpoints.yaml`` packaged with ncprobe (a symlink to
the repository's root file). A local file whose sha256 equals an entry's hash, or starts with an
entry's 8+-hex prefix, takes that entry's facts; a registry name given as the source resolves to
the entry's file, downloaded once into ``$NCPROBE_CHECKPOINTS`` (default
``~/.cache/ncprobe/checkpoints``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ..errors import CheckpointError
from .files import _short, sha256_file

PACKAGED = Path(__file__).resolve().parent.parent / "checkpoints.yaml"
_CACHE: dict[tuple[str, float], list[dict[str, Any]]] = {}


def registry_path() -> Path | None:
    env = os.environ.get("NCPROBE_REGISTRY")
    if env:
        path = Path(env).expanduser()
        if not path.exists() or path.is_dir():  # /dev/null is allowed: an empty registry
            raise CheckpointError(f"NCPROBE_REGISTRY={env} is not a file; point it at a checkpoints.yaml or unset it")
        return path
    return PACKAGED if PACKAGED.is_file() else None


def cache_dir() -> Path:
    return Path(os.environ.get("NCPROBE_CHECKPOINTS") or "~/.cache/ncprobe/checkpoints").expanduser()


def _normalize(entry: dict, path: Path) -> dict[str, Any]:
    if not isinstance(entry, dict) or not entry.get("name") or not entry.get("arch"):
        raise CheckpointError(f"checkpoint registry {path} has an entry without name/arch ({entry!r:.80}); fix the file")
    e = dict(entry)
    if e.get("sha256") is not None:
        if not isinstance(e["sha256"], str):
            raise CheckpointError(f"checkpoint registry {path}: sha256 of {e['name']} must be a quoted string")
        e["sha256"] = e["sha256"].lower()
    for key in ("mean", "std", "input_size"):
        if e.get(key) is not None:
            e[key] = tuple(e[key])
    return e


def entries(path: Path | None = None) -> list[dict[str, Any]]:
    """All entries of the registry (cached per file and modification time)."""
    path = path or registry_path()
    if path is None:
        return []
    key = (str(path), path.stat().st_mtime if path.is_file() else 0.0)
    if key not in _CACHE:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, OSError) as exc:
            raise CheckpointError(f"checkpoint registry {path} cannot be read ({_short(exc)}); fix or unset NCPROBE_REGISTRY") from None
        items = data.get("checkpoints", []) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise CheckpointError(f"checkpoint registry {path} must hold a list under 'checkpoints:'")
        _CACHE[key] = [_normalize(e, path) for e in items]
    return _CACHE[key]


def find_by_sha(sha256: str) -> dict[str, Any] | None:
    """The entry whose full sha256 equals ``sha256`` or whose (8+ hex) prefix starts it."""
    sha256 = sha256.lower()
    for e in entries():
        h = e.get("sha256")
        if h and len(h) >= 8 and sha256.startswith(h):
            return e
    return None


def find_by_name(name: str) -> dict[str, Any] | None:
    for e in entries():
        if name == e["name"] or name in (e.get("aliases") or []) or name == e.get("filename"):
            return e
    return None


def names() -> list[str]:
    return [e["name"] for e in entries()]


def fetch(entry: dict[str, Any]) -> Path:
    """The local file of a registry entry: the cached copy, else downloaded (and hash-checked) once."""
    url = entry.get("url") or ""
    filename = entry.get("filename") or url.rstrip("/").rsplit("/", 1)[-1]
    dest = cache_dir() / filename
    if dest.is_file():
        return dest
    if not url.startswith(("http://", "https://")):
        raise CheckpointError(f"registry entry {entry['name']} has no downloadable url; give the file's path instead")
    import torch.hub

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        torch.hub.download_url_to_file(url, str(part), progress=sys.stderr.isatty())
    except Exception as exc:
        part.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not download {entry['name']} from {url} ({_short(exc)}); check the network, "
            f"or download it yourself and pass the file's path"
        ) from None
    want = entry.get("sha256")
    got = sha256_file(part)
    if want and not got.startswith(want):
        part.unlink(missing_ok=True)
        raise CheckpointError(
            f"the download of {entry['name']} has sha256 {got[:12]}..., the registry says {want[:12]}...; "
            "the file changed upstream or the download is corrupt"
        )
    part.replace(dest)
    return dest
