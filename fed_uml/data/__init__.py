"""Data: the embedded synthetic sensors and readers of real EO data sets, as modalities.

Every source ends up as `fed_uml.modality.ModalityData` (the containers live outside this
package so that training, methods and the server never need to import data readers).
"""

from fed_uml.data.registry import available_datasets, load_dataset, register_dataset

__all__ = ["available_datasets", "load_dataset", "register_dataset"]
