"""What the second half of Harun et al. needs: per-layer transfer probes and NC-vs-OOD correlations."""

from .correlation import correlate, correlation_frame
from .linear_transfer import transfer_accuracy, transfer_frame

__all__ = ["correlate", "correlation_frame", "transfer_accuracy", "transfer_frame"]
