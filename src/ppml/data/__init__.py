"""Encrypted datasets on any fsspec URL, in and out of Arrow."""

from __future__ import annotations

from ppml.data.dataset import Dataset, DatasetWriter, open_dataset, read_dataset, write_dataset
from ppml.data.manifest import Manifest, Part
from ppml.data.modes import FORMATS, Mode

__all__ = ["FORMATS", "Dataset", "DatasetWriter", "Manifest", "Mode", "Part", "open_dataset", "read_dataset",
           "write_dataset"]
