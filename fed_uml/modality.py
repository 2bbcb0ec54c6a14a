"""In-memory containers that every data source (synthetic or real) ends up as.

Readers return raw samples in physical units; `ModalityData` holds one modality's
normalised train and test tensors, ready for fast batched training on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset[dict[str, torch.Tensor | int]]):
    """Images (N, C, H, W) float32 and labels (N,) int64 held in memory; samples are dicts."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scene_ids: list[str] | None = None):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.float().contiguous()
        self.labels = labels.long()
        self.scene_ids = scene_ids

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return {"image": self.images[i], "label": int(self.labels[i])}

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> ArrayDataset:
        """The examples at `index`."""
        index = torch.as_tensor(index, dtype=torch.long)
        ids = [self.scene_ids[i] for i in index.tolist()] if self.scene_ids is not None else None
        return ArrayDataset(self.images[index], self.labels[index], ids)

    @property
    def channels(self) -> int:
        """Number of bands."""
        return self.images.shape[1]


@dataclass
class ModalityData:
    """One modality (sensor) of a data set: its train and test sets over the common classes."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    class_names: tuple[str, ...]
    band_names: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.train) == 0:
            raise ValueError(f"modality {self.name!r}: the training set is empty")
        if len(self.test) == 0:
            raise ValueError(f"modality {self.name!r}: the test set is empty")
        if self.train.channels != self.test.channels:
            raise ValueError(
                f"modality {self.name!r}: train has {self.train.channels} channels, test {self.test.channels}"
            )

    @property
    def channels(self) -> int:
        """Number of bands."""
        return self.train.channels

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)
