"""ncprobe: per-layer neural-collapse statistics joined with post-hoc OOD scores."""

__version__ = "0.1.0"
