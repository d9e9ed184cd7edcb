"""Step 2: run each data source through the network once (or read it from the cache), recording
which sets came from the cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checkpoint.loaded import LoadedCheckpoint, input_size_error
from ..data.source import DataSource
from ..features.extract import extract_many
from ..features.featureset import FeatureSet
from .inputs import LayersInputs

#: the most input bytes one batch may hold (float32 images after preprocessing); high-resolution
#: inputs get smaller batches so that a 1024x1024 set does not need tens of GB of activations
BATCH_INPUT_BYTES = 1 << 26


def bounded_batch(batch_size: int, input_size) -> int:
    """``batch_size``, lowered so that one batch of float32 inputs of ``input_size`` fits
    :data:`BATCH_INPUT_BYTES` (never below 1). Results do not depend on the batch size."""
    per_image = 4 * int(input_size[0]) * int(input_size[1]) * int(input_size[2])
    return max(1, min(int(batch_size), BATCH_INPUT_BYTES // max(per_image, 1)))


class SharedExtractor:
    """Extraction for several checkpoints that reads each data source once.

    ``shared.view(i)`` is checkpoint ``i``'s extractor (callable like :class:`FeatureExtractor`).
    The first view asked for a source runs every checkpoint's missing features in one pass over
    it (:func:`ncprobe.features.extract.extract_many`) and keeps the other checkpoints' results
    until their views ask for them (each is handed out once, then released).
    """

    def __init__(self, ckpts: list[LoadedCheckpoint], *, layers=None, device=None, batch_size: int = 256,
                 cache_dir=None, use_cache: bool = True, progress: bool = True, workers: int = 0,
                 dtype: str = "float32"):
        self.ckpts = list(ckpts)
        batch = min(bounded_batch(batch_size, c.input_size) for c in self.ckpts)
        self.options = {"layers": layers, "device": device, "batch_size": batch, "cache_dir": cache_dir,
                        "use_cache": use_cache, "progress": progress, "workers": workers,
                        "dtype": dtype}
        self._held: dict[tuple[str, int], FeatureSet] = {}

    def view(self, index: int) -> _View:
        return _View(self, index)

    def _get(self, source: DataSource, index: int, class_stats: bool = False) -> FeatureSet | None:
        key = (source.fingerprint, index)
        if key not in self._held:
            summary = _class_stats_of(self.ckpts) if class_stats else None
            try:
                sets = extract_many(self.ckpts, source, shard_summary=summary, **self.options)
            except RuntimeError as exc:  # a wrong input size reads as one, naming the checkpoint
                for ckpt in self.ckpts:
                    err = input_size_error(ckpt, exc)
                    if err is not None:
                        raise err from None
                raise
            for i, fs in enumerate(sets):
                self._held[(source.fingerprint, i)] = fs
        return self._held.pop(key)


class _View:
    """One checkpoint's extractor within a :class:`SharedExtractor`."""

    def __init__(self, shared: SharedExtractor, index: int):
        self.shared = shared
        self.index = index
        self.ckpt = shared.ckpts[index]
        self.from_cache: dict[str, bool] = {}

    def __call__(self, source: DataSource, *, class_stats: bool = False) -> FeatureSet | None:
        """The features of ``source`` (None on a distributed rank other than 0). ``class_stats``:
        under torch.distributed, also accumulate the class statistics of every layer on each rank's
        share (a fit set), merged on rank 0 into ``fs.meta["class_stats"]``."""
        fs = self.shared._get(source, self.index, class_stats)
        if fs is not None:
            self.from_cache[source.name] = fs.from_cache
            if class_stats and fs.shard_summaries:
                fs.meta["class_stats"] = merge_rank_stats(fs.shard_summaries)
        return fs


class FeatureExtractor(_View):
    """``extractor(source)`` -> the :class:`FeatureSet` of ``source`` under one checkpoint and one
    set of extraction options; ``from_cache`` maps each set's name to whether it was a cache hit.
    (A :class:`SharedExtractor` of one checkpoint.)"""

    def __init__(self, ckpt: LoadedCheckpoint, **options):
        super().__init__(SharedExtractor([ckpt], **options), 0)


def _class_stats_of(ckpts):
    """A shard summary: per layer, the float64 class statistics of one rank's rows (a layer-wise
    :class:`~ncprobe.stats.accumulator.ClassStats`)."""
    from ..stats.accumulator import ClassStats

    def summary(index: int, fs: FeatureSet) -> dict:
        num_classes = ckpts[index].num_classes
        ok = (fs.labels >= 0) & (fs.labels < num_classes)
        return {layer: ClassStats.from_features(fs[layer][ok], fs.labels[ok], num_classes) for layer in fs.layers}

    return summary


def merge_rank_stats(summaries: list) -> dict:
    """Rank 0's merge of every rank's class statistics (Chan et al.'s exact pairwise update, in rank order)."""
    parts = [s for s in summaries if s]
    merged = dict(parts[0])
    for part in parts[1:]:
        for layer, st in part.items():
            merged[layer] = merged[layer].merge(st) if layer in merged else st
    return merged


@dataclass
class LayersFeatures:
    """The features of every set of a ``layers`` run."""

    fit: FeatureSet
    id: FeatureSet
    ood: list[FeatureSet]
    transfer: list[FeatureSet] = field(default_factory=list)
    val: list[FeatureSet] = field(default_factory=list)  # validation OOD sets (hyper-parameter choice only)
    csid: list[FeatureSet] = field(default_factory=list)  # covariate-shifted ID sets, scored as ID


def _distributed() -> bool:
    from ..distributed import world

    return world().distributed


def extract_layers_features(inputs: LayersInputs, extract: FeatureExtractor) -> LayersFeatures | None:
    """Fit, ID, OOD and transfer features; with a held-out fit split, one pass over the ID set
    gives both the fit rows and the remaining ID rows. Under torch.distributed every rank takes
    part in each set's extraction and only rank 0 gets the features (None elsewhere)."""
    if inputs.split is not None:
        every_id = extract(inputs.id)
        fit_fs = id_fs = None
        if every_id is not None:
            fit_fs, id_fs = every_id.subset(inputs.split[0]), every_id.subset(inputs.split[1])
            fit_fs.name = f"{inputs.id.name}[fit {inputs.fit_split}]"
            id_fs.name = f"{inputs.id.name}[rest]"
    else:
        fit_fs = extract(inputs.fit, class_stats=_distributed())
        id_fs = extract(inputs.id)
    ood = [extract(src) for src in inputs.ood]
    transfer = [extract(src) for src in inputs.transfer]
    val = [extract(src) for src in inputs.val]
    csid = [extract(src) for src in inputs.csid]
    if fit_fs is None:
        return None
    return LayersFeatures(fit=fit_fs, id=id_fs, ood=ood, transfer=transfer, val=val, csid=csid)
