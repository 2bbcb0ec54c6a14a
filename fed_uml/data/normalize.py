"""Per-band normalisation, kept apart from I/O: readers return physical units, this scales them.

Statistics are computed on the training split of a modality (never on test data) and stored
with the data (`info["band_mean"]`, `info["band_std"]`) so that they can be reported and
written into a deployed model. `load_dataset(cfg, normalize=False)` gives the data in
physical units, so that a federated institution can standardise with the statistics of its
OWN training share (`standardize` on its subset), as a real institution must.
"""

from __future__ import annotations

import torch

from fed_uml.modality import ArrayDataset, ModalityData


def band_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and standard deviation over (N, H, W) of a (N, C, H, W) tensor."""
    x = images.double()
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return mean.float(), std.float()


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`images` (N, C, H, W) standardised per band with `mean` and `std` (C,)."""
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def standardize(data: ModalityData) -> ModalityData:
    """`data` (physical units) scaled per band by the mean/std of ITS training images."""
    if "band_mean" in data.info:
        raise ValueError(f"modality {data.name!r} is already normalised")
    # a streamed data set (fed_uml.data.store) combines its rows' stored statistics and
    # normalises each batch as it is read; an in-memory one is scaled here, once
    streamed = hasattr(data.train, "normalized")
    # a StreamedDataset (duck-typed: fed_uml.data.store sits above this module)
    mean, std = data.train.band_stats() if streamed else band_stats(data.train.images)  # type: ignore[attr-defined]

    def scaled(ds: ArrayDataset) -> ArrayDataset:
        if streamed:
            return ds.normalized(mean, std)  # type: ignore[attr-defined]  # a StreamedDataset, as above
        return ArrayDataset(normalize(ds.images, mean, std), ds.labels, ds.scene_ids)

    info = {**data.info, "band_mean": mean.tolist(), "band_std": std.tolist(),
            "normalisation": "per-band mean/std of these training images"}
    return ModalityData(data.name, scaled(data.train), scaled(data.test), data.class_names, data.band_names, info)
