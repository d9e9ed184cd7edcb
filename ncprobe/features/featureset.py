"""The per-layer features of one dataset under one checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeatureSet:
    """Pooled features, one float32 (N, D) array per probe point, in probe order.

    ``layers`` always ends with ``penultimate`` (the classifier's input) and ``logits``.
    ``labels`` is int64 (N,), -1 where unknown.
    """

    name: str
    layers: list[str]
    features: dict[str, np.ndarray]
    labels: np.ndarray
    from_cache: bool = False
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    #: row -> sample index in the source (None: row i is sample i)
    index: np.ndarray | None = None
    #: under torch.distributed (or when asked for): one summary per rank of its share of the rows,
    #: e.g. the per-rank class statistics that rank 0 merges
    shard_summaries: list | None = None

    def sample_index(self) -> np.ndarray:
        """Each row's index in the data source it was read from."""
        return np.arange(len(self)) if self.index is None else self.index

    def __len__(self) -> int:
        return int(len(self.labels))

    def __getitem__(self, layer: str) -> np.ndarray:
        return self.features[layer]

    def dim(self, layer: str) -> int:
        return int(self.features[layer].shape[1])

    def subset(self, indices) -> "FeatureSet":
        idx = np.asarray(indices)
        return FeatureSet(
            name=self.name,
            layers=list(self.layers),
            features={k: v[idx] for k, v in self.features.items()},
            labels=self.labels[idx],
            from_cache=self.from_cache,
            seconds=self.seconds,
            meta=dict(self.meta),
            index=self.sample_index()[idx],
        )

    @classmethod
    def concat(cls, sets: list["FeatureSet"], name: str | None = None) -> "FeatureSet":
        """The rows of ``sets`` one after another (same layers required), e.g. an ID set and its
        covariate-shifted copies counted as ID in full-spectrum detection."""
        if len(sets) == 1 and name is None:
            return sets[0]
        layers = list(sets[0].layers)
        for fs in sets[1:]:
            if list(fs.layers) != layers:
                raise ValueError(f"cannot concatenate {fs.name!r}: its layers differ from {sets[0].name!r}'s")
        return cls(
            name=name or "+".join(fs.name for fs in sets),
            layers=layers,
            features={k: np.concatenate([fs.features[k] for fs in sets]) for k in layers},
            labels=np.concatenate([fs.labels for fs in sets]),
            from_cache=all(fs.from_cache for fs in sets),
            seconds=sum(fs.seconds for fs in sets),
            index=np.concatenate([fs.sample_index() for fs in sets]),
        )
