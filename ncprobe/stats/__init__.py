"""Streaming class statistics (float64) and the neural-collapse metrics computed from them."""

from .accumulator import ClassStats
from .collapse import collapse_metrics, ncc_counts

__all__ = ["ClassStats", "collapse_metrics", "ncc_counts"]
