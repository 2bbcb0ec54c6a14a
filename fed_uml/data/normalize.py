"""Per-band normalisation, kept apart from I/O: readers return physical units, this scales them.

Statistics are computed on the training split of each modality (never on test data) and
stored with the data so that they can be reported and reused.
"""

from __future__ import annotations

import torch


def band_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and standard deviation over (N, H, W) of a (N, C, H, W) tensor."""
    x = images.double()
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return mean.float(), std.float()


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
