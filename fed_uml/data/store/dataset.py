"""A modality's train or test set read from its store batch by batch.

What the training loop, evaluation and calibration index like an in-memory `ArrayDataset`.

Why it quacks like `ArrayDataset`: the loop (`fed_uml.training.loop`), evaluation and Algorithm 1
(`fed_uml.calibration`) only ever take `images[index]` (a batch of row positions or a slice),
`len`, `labels` and `subset`, so a dataset whose `images` reads those rows from the store and
normalises them on the way serves them unchanged. Labels, scene ids and row numbers stay in
memory (a few bytes per patch); pixels never do beyond the batch.

Normalisation is per batch with the statistics of the training rows, combined from the rows'
stored statistics (`layout.combine_row_stats`): no pass over the pixels, for a modality as for
one institution's share. With `dataset.store.dtype=float32` the values, the statistics and the
normalised batches equal the in-memory path's bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fed_uml.data.normalize import normalize
from fed_uml.data.store.layout import combine_row_stats
from fed_uml.data.store.reader import StoreFile
from fed_uml.modality import ArrayDataset


class StoredImages:
    """Rows `rows` of a store as a read-only (N, C, H, W) float32 "tensor": indexing reads them."""

    ndim = 4
    dtype = torch.float32

    def __init__(self, store: StoreFile, rows: np.ndarray, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mean, self.std = mean, std

    @property
    def shape(self) -> torch.Size:
        """(N, C, H, W) of the rows."""
        return torch.Size((len(self.rows), *self.store.shape))

    def size(self, dim: int | None = None) -> torch.Size | int:
        """The shape, or its size along `dim`, as a tensor's `size` gives it."""
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        """Bytes this object holds in memory (its row numbers; the pixels stay in the store)."""
        return self.rows.nbytes

    def _positions(self, key: slice | torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
        if isinstance(key, slice):
            return self.rows[key]
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        return self.rows[np.asarray(key, dtype=np.int64)]

    def __getitem__(self, key: Any) -> torch.Tensor:  # any index a tensor's first dimension takes
        single = isinstance(key, (int, np.integer))
        raw = self.store.read(self._positions([int(key)] if single else key))
        x = torch.from_numpy(raw.astype(np.float32, copy=False))
        if self.mean is not None and self.std is not None:
            x = normalize(x, self.mean, self.std)
        return x[0] if single else x

    def take(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> StoredImages:
        """The rows at `index`, still on disk."""
        return StoredImages(self.store, self._positions(index), self.mean, self.std)

    def normalized(self, mean: torch.Tensor, std: torch.Tensor) -> StoredImages:
        """The same rows, normalised with `mean` and `std` as they are read."""
        return StoredImages(self.store, self.rows, mean, std)

    def band_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band mean and std of these rows' stored values (as `normalize.band_stats` on them)."""
        if self.mean is not None:
            raise ValueError(f"{self.store.folder}: these images are already normalised")
        stats = np.asarray(self.store.row_stats[np.sort(self.rows)])
        mean, std = combine_row_stats(stats, self.store.shape[1] * self.store.shape[2])
        return torch.from_numpy(mean).float(), torch.from_numpy(std).clamp_min(1e-6).float()


class StreamedDataset(ArrayDataset):
    """An `ArrayDataset` whose images are `StoredImages`: labels in memory, pixels in the store."""

    images: StoredImages  # type: ignore[assignment]  # quacks like the tensor it replaces (module docstring)

    def __init__(self, images: StoredImages, labels: torch.Tensor, scene_ids: list[str] | None = None):
        # no ArrayDataset.__init__: it would make the images one tensor in memory
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.scene_ids = scene_ids

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> StreamedDataset:
        """The examples at `index`, streamed from the same store."""
        index = torch.as_tensor(index, dtype=torch.long)
        ids = [self.scene_ids[i] for i in index.tolist()] if self.scene_ids is not None else None
        return StreamedDataset(self.images.take(index), self.labels[index], ids)

    def band_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band mean and standard deviation of the images, from the store's row statistics."""
        return self.images.band_stats()

    def normalized(self, mean: torch.Tensor, std: torch.Tensor) -> StreamedDataset:
        """The same examples, normalised with `mean` and `std` as they are read."""
        return StreamedDataset(self.images.normalized(mean, std), self.labels, self.scene_ids)

    @property
    def channels(self) -> int:
        """Number of bands."""
        return self.images.shape[1]
