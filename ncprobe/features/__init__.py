"""Per-layer features in one forward pass, cached on disk."""

from .extract import extract_features, pool
from .featureset import FeatureSet
from .probe_points import LOGITS, PENULTIMATE, resolve_layers

__all__ = ["FeatureSet", "extract_features", "pool", "resolve_layers", "PENULTIMATE", "LOGITS"]
