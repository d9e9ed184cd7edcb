"""ncprobe: per-layer neural-collapse statistics joined with post-hoc OOD scores.

The pipeline, one module each: checkpoint -> features (cached) -> statistics -> scores -> metrics
-> leaderboard. From Python::

    import ncprobe
    res = ncprobe.layers("resnet20.th", id="cifar10", ood=["svhn", "cifar100"])
    res.ood        # long-format DataFrame: one row per (layer, scorer, OOD set)
    res.collapse   # one row per layer: NC1-NC4, NCC accuracy, ...

Scores follow one sign convention: higher = more in-distribution.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_checkpoint": ("ncprobe.checkpoint", "load_checkpoint"),
    "load_dataset": ("ncprobe.data", "load_dataset"),
    "extract_features": ("ncprobe.features", "extract_features"),
    "get_scorer": ("ncprobe.scores", "get_scorer"),
    "list_scorers": ("ncprobe.scores", "list_scorers"),
    "ood_metrics": ("ncprobe.metrics", "ood_metrics"),
    "layers": ("ncprobe.api", "layers"),
    "collapse": ("ncprobe.api", "collapse"),
    "evaluate": ("ncprobe.api", "evaluate"),
    "leaderboard": ("ncprobe.report.leaderboard", "leaderboard"),
    "NcprobeError": ("ncprobe.errors", "NcprobeError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    # Imported on first use so that `import ncprobe` (and `ncprobe --help`) stays light.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ncprobe' has no attribute {name!r}")
