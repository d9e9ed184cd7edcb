"""Datasets: spec strings -> DataSource (raw uint8 images + labels), batching, preprocessing.

``load_dataset("cifar10:train@classes=0-5,n=1000")`` -> :class:`DataSource`; see
:mod:`ncprobe.data.spec` for the grammar and :mod:`ncprobe.data.source_kinds` for the sources.
"""

from .batches import batch_loader
from .source import DataSource
from .source_kinds import KNOWN_NAMES, default_data_root, fit_spec_for, load_dataset
from .spec import DatasetSpec, parse_spec
from .transforms import Preprocess

__all__ = [
    "KNOWN_NAMES",
    "DataSource",
    "DatasetSpec",
    "Preprocess",
    "batch_loader",
    "default_data_root",
    "fit_spec_for",
    "load_dataset",
    "parse_spec",
]
