"""Step 1 of every job: resolve the checkpoint, the scorers and the data sources, and check
everything that can be checked before the first forward pass (labels within the head, class sizes
the scorers need, empty sets, conflicting parameters)."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checkpoint import load_checkpoint
from ..checkpoint.loaded import LoadedCheckpoint
from ..data import fit_spec_for, load_dataset
from ..data.source import DataSource
from ..errors import NcprobeError, ParameterError


def resolve_checkpoint(checkpoint, options: dict | None = None) -> LoadedCheckpoint:
    """A :class:`LoadedCheckpoint` as given, or loaded from a path/name with ``options``."""
    if isinstance(checkpoint, LoadedCheckpoint):
        return checkpoint
    return load_checkpoint(checkpoint, **(options or {}))


_GLOB = re.compile(r"[*?\[]")


def expand_checkpoints(args) -> list[str]:
    """The checkpoints named by ``args``: each argument as given, or, when it holds a glob character
    (``* ? [``) and is no existing path, the files it matches in sorted order. A pattern that matches
    no file is a one-line error. A file named twice is kept once (its first place)."""
    found: list = []
    for arg in [args] if isinstance(args, (str, os.PathLike)) else args:
        if not isinstance(arg, (str, os.PathLike)):  # a LoadedCheckpoint: as it is
            found.append(arg)
            continue
        text = str(arg)
        if _GLOB.search(text) and not Path(text).expanduser().exists():
            hits = [h for h in sorted(glob.glob(os.path.expanduser(text))) if Path(h).is_file()]
            if not hits:
                raise NcprobeError(f"no checkpoint file matches {text!r}; check the pattern (quote it, "
                                   "e.g. 'runs/m.epoch*.safetensors', so that ncprobe expands it)")
            found.extend(hits)
        else:
            found.append(text)
    if not found:
        raise NcprobeError("no checkpoint given; pass one or more CKPT paths or a quoted glob")
    seen: set[str] = set()
    unique = []
    for item in found:
        if isinstance(item, str):
            if item in seen:
                continue
            seen.add(item)
        unique.append(item)
    return unique


def resolve_source(spec, *, data_root=None, download=False, default_split="test") -> DataSource:
    """A :class:`DataSource` as given, or loaded from a spec string."""
    if isinstance(spec, DataSource):
        return spec
    return load_dataset(str(spec), data_root=data_root, download=download, default_split=default_split)


def resolve_scorers(scorers) -> list[str]:
    """``None`` -> the registry's default set; ``"all"`` -> every registered scorer; a comma-separated
    string or list -> validated names (``all`` among them expands in place)."""
    from ..scores import default_scorers, get_scorer, list_scorers  # the scorer modules load scipy

    if scorers is None or scorers == "":
        return default_scorers()
    if isinstance(scorers, str):
        scorers = [scorers]
    names: list[str] = []
    for item in scorers:
        for name in (s.strip() for s in str(item).split(",")):
            if name == "all":
                names.extend(list_scorers(registration_order=True))
            elif name:
                get_scorer(name)  # an unknown name raises the registry's one-line error with the choices
                names.append(name.lower())
    if not names:
        raise ParameterError(f"{{scorers}} {scorers!r} names no scorer; give names such as gda,knn,energy or all")
    return list(dict.fromkeys(names))


def _parse_value(text: str):
    low = text.strip().lower()
    if low == "none":
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def resolve_scorer_params(params) -> dict[str, dict]:
    """``{"knn": {"k": 10}}`` as given, or ``["knn.k=10", "react.percentile=95"]`` parsed (numbers,
    true/false and none are typed); every scorer and parameter name is checked against the registry."""
    from ..scores import get_scorer

    if not params:
        return {}
    if isinstance(params, dict):
        out = {str(k).lower(): dict(v) for k, v in params.items()}
    else:
        out = {}
        for item in [params] if isinstance(params, str) else params:
            name_param, sep, value = str(item).partition("=")
            name, dot, param = name_param.strip().partition(".")
            if not (sep and dot and name and param.strip()):
                raise ParameterError(f"{{scorer_params}} {item!r} is not NAME.PARAM=VALUE; e.g. knn.k=10")
            out.setdefault(name.lower(), {})[param.strip()] = _parse_value(value)
    for name, values in out.items():
        get_scorer(name, **values)  # unknown scorer or parameter: the registry's one-line error
    return out


def check_labelled(source, num_classes: int, role: str) -> None:
    """A fit/evaluation set (features or source) must be non-empty, labelled, within the head's classes."""
    labels = np.asarray(source.labels)
    if len(labels) == 0:
        raise NcprobeError(f"the {role} set {source.name!r} is empty; check its path and options")
    if (labels < 0).any():
        raise NcprobeError(
            f"the {role} set {source.name!r} has no labels; give a labelled set (class sub-folders, an npz with y)"
        )
    if labels.max() >= num_classes:
        raise NcprobeError(
            f"the {role} set {source.name!r} has label {int(labels.max())} but the checkpoint has {num_classes} "
            f"classes; use the dataset the model was trained on (or select classes with @classes=...)"
        )


def check_class_sizes(labels, scorers: list[str], role: str = "fit") -> None:
    """Fail before any forward pass when a per-class scorer cannot fit: each scorer's
    ``min_per_class`` (from the registry; GDA needs 2 samples a class for a covariance)."""
    from ..scores import scorer_class

    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0])
    for name in scorers:
        need = scorer_class(name).min_per_class
        few = np.flatnonzero((counts > 0) & (counts < need))
        if few.size:
            ids = ", ".join(map(str, few[:10].tolist()))
            what = "a single sample" if (counts[few] == 1).all() else "too few samples"
            raise ParameterError(
                f"the {role} set has {what} of class(es) {ids}, too few for {name} (it needs {need} samples a "
                f"class); add samples, select classes with @classes=..., or leave {name} out of {{scorers}}"
            )


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, rest): ``fraction`` of each class goes to fit, chosen with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"{{fit_split}} must be between 0 and 1 (exclusive), got {fraction}")
    rng = np.random.default_rng(seed)
    fit, rest = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else len(idx)
        fit.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(rest))


@dataclass
class LayersInputs:
    """Everything a ``layers`` run reads, resolved and checked."""

    checkpoint: LoadedCheckpoint
    scorers: list[str]
    id: DataSource
    ood: list[DataSource]
    fit: DataSource | None = None  # None when the fit set is held out of the ID set
    fit_split: float | None = None
    split: tuple[np.ndarray, np.ndarray] | None = None  # (fit rows, remaining ID rows) of ``id``
    transfer: list[DataSource] = field(default_factory=list)
    seed: int = 0
    scorer_params: dict = field(default_factory=dict)
    val: list[DataSource] = field(default_factory=list)  # validation OOD sets: tune, never report
    #: covariate-shifted ID sets counted as ID (full-spectrum detection): their rows join the ID scores
    csid: list[DataSource] = field(default_factory=list)


def _as_list(specs) -> list:
    if specs is None:
        return []
    return [specs] if isinstance(specs, (str, DataSource)) else list(specs)


def resolve_layers_inputs(checkpoint, id, ood, fit=None, *, fit_split=None, seed=0, scorers=None, scorer_params=None,
                          transfer=None, val_ood=None, csid=None, data_root=None, download=False,
                          checkpoint_options=None) -> LayersInputs:
    """Resolve and check the inputs of a ``layers`` run; nothing here runs the network."""
    ckpt = resolve_checkpoint(checkpoint, checkpoint_options)
    names = resolve_scorers(scorers)
    params = resolve_scorer_params(scorer_params)
    ood = _as_list(ood)
    if not ood:
        raise ParameterError("no OOD set given; pass at least one {ood} SPEC")

    def source(spec, split):
        return resolve_source(spec, data_root=data_root, download=download, default_split=split)

    id_source = source(id, "test")
    if fit is not None and fit_split is not None:
        raise ParameterError("give either {fit} or {fit_split}, not both")
    if fit is None and fit_split is None:
        fit = fit_spec_for(id_source.spec) if not isinstance(id, DataSource) else None
        if fit is None:
            raise ParameterError(
                f"the ID set {id_source.name!r} has no train split to fit on; pass {{fit}} SPEC "
                f"or {{fit_split}} 0.5 to hold out half of it"
            )
    inputs = LayersInputs(checkpoint=ckpt, scorers=names, id=id_source, ood=[], fit_split=fit_split, seed=seed,
                          scorer_params=params)
    if fit is not None:
        inputs.fit = source(fit, "train")
        if inputs.fit.fingerprint == id_source.fingerprint:
            raise ParameterError(
                f"the fit set {inputs.fit.name!r} is the ID test set itself; fitting on the test set inflates "
                "every score: give {fit} the training split, or hold part of the ID set out with {fit_split}"
            )
        check_labelled(inputs.fit, ckpt.num_classes, "fit")
        check_class_sizes(inputs.fit.labels, names)
    labels = np.asarray(id_source.labels)
    if len(labels) and labels.max() >= ckpt.num_classes:
        raise NcprobeError(
            f"the ID set {id_source.name!r} has label {int(labels.max())} but the checkpoint has {ckpt.num_classes} "
            "classes; use the dataset the model was trained on (or select classes with @classes=...)"
        )
    inputs.ood = [source(spec, "test") for spec in ood]
    seen: dict[str, str] = {}
    for src in inputs.ood:
        if len(src) == 0:
            raise NcprobeError(f"the OOD set {src.name!r} is empty; check its path and options")
        if src.fingerprint == id_source.fingerprint:
            raise ParameterError(f"the OOD set {src.name!r} is the ID set itself; give {{ood}} a different set")
        for key in (f"name:{src.name}", f"data:{src.fingerprint}"):
            if key in seen:
                raise ParameterError(
                    f"the OOD set {src.name!r} is given twice ({seen[key]!r} is the same set); it would count "
                    "twice in every mean: give each {ood} once"
                )
            seen[key] = src.name
    if fit_split is not None:
        check_labelled(id_source, ckpt.num_classes, "ID")
        inputs.split = stratified_split(np.asarray(id_source.labels), float(fit_split), seed)
        check_class_sizes(id_source.labels[inputs.split[0]], names)
    inputs.csid = [source(spec, "test") for spec in _as_list(csid)]
    for src in inputs.csid:
        if len(src) == 0:
            raise NcprobeError(f"the covariate-shifted ID set {src.name!r} is empty; check its path and options")
        if src.fingerprint in {o.fingerprint for o in inputs.ood} | {id_source.fingerprint}:
            raise ParameterError(f"{src.name!r} is given both as a covariate-shifted ID set and as the ID or an "
                                 "OOD set; give each set one role")
    inputs.transfer = [source(spec, "test") for spec in _as_list(transfer)]
    inputs.val = [source(spec, "test") for spec in _as_list(val_ood)]
    test_names = {src.name for src in inputs.ood}
    in_distribution = {id_source.fingerprint} | ({inputs.fit.fingerprint} if inputs.fit is not None else set())
    val_seen: set[str] = set()
    for src in inputs.val:
        if len(src) == 0:
            raise NcprobeError(f"the validation OOD set {src.name!r} is empty; check its path and options")
        if src.fingerprint in in_distribution:
            raise ParameterError(f"the validation OOD set {src.name!r} is the ID or fit set; give {{val_ood}} "
                                 "an OOD set")
        if src.fingerprint in val_seen:
            raise ParameterError(f"the validation OOD set {src.name!r} is given twice; give each {{val_ood}} once")
        val_seen.add(src.fingerprint)
        if src.name in test_names or src.fingerprint in {t.fingerprint for t in inputs.ood}:
            raise ParameterError(f"{src.name!r} is both a test OOD set and a validation OOD set; tuning on a "
                                 "test set would report a tuned number: give {val_ood} a set not in {ood}")
    return inputs
