"""Data: the embedded synthetic sensors and readers of real EO data sets, as modalities."""

from fed_uml.data.base import ArrayDataset, ModalityData
from fed_uml.data.registry import available_datasets, load_dataset, register_dataset

__all__ = ["ArrayDataset", "ModalityData", "available_datasets", "load_dataset", "register_dataset"]
