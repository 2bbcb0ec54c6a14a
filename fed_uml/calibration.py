"""Post-hoc BatchNorm calibration (Algorithm 1 of the UML study).

During unpaired training the shared backbone's BN layers see every modality, so their
running statistics are a blend that matches none of them. Calibration gives each modality
k its own copy g_k of the backbone and re-estimates the BN statistics of g_k and f_k on
D_k alone, as an exact cumulative average over E_cal epochs, changing nothing else.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fed_uml.models.uml import Projection, UMLModel


class CalibratedModel(nn.Module):
    """The deployed single-modality model h_k = g_k o f_k (always in eval mode)."""

    def __init__(self, modality: str, projection: Projection, backbone: nn.Module):
        super().__init__()
        self.modality = modality
        self.projection = projection
        self.backbone = backbone
        self.eval()

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """Logits of `x`; a `modality` other than the calibrated one is an error."""
        if modality is not None and modality != self.modality:
            raise KeyError(f"this model was calibrated for modality {self.modality!r}, not {modality!r}")
        return self.backbone(self.projection(x))

    def train(self, mode: bool = True) -> CalibratedModel:  # frozen by construction
        """Stay in eval mode whatever `mode` asks: the calibrated BN statistics must not move."""
        return super().train(False)


def _prepare_for_calibration(module: nn.Module) -> list[_BatchNorm]:
    """Steps 2-4 of Algorithm 1 on `module` (already a copy): freeze, zero stats, use a CMA."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    for bn in bns:
        if not bn.track_running_stats:
            raise ValueError("BN calibration needs BatchNorm layers that track running statistics")
        assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
        bn.running_mean.zero_()
        bn.running_var.zero_()
        bn.num_batches_tracked.zero_()
        bn.momentum = None  # PyTorch: cumulative moving average over all batches seen
        bn.train()  # only BN layers use batch statistics and update their running stats
    return bns


def calibration_batches(n: int, batch_size: int, epochs: int, seed: int | None = 0) -> list[torch.Tensor]:
    """The index batches Algorithm 1 visits.

    Each epoch a seeded random permutation of D_k cut into ceil(n / batch_size) batches of EQUAL
    size (sizes differ by at most one sample, none smaller than 2 and none larger than `batch_size`,
    except that B = 2 with an odd count makes one batch of 3); `seed=None`: in stored order.

    Why equal sizes: with `momentum=None` PyTorch's running statistics are the plain average
    of the per-batch statistics, every batch weighing the same. Cut as 64, 64, 64, 8, the
    trailing 8 images carried a quarter of the estimate and its noisy small-batch statistics
    cost a well-trained model 1-2 points (200 images, B = 64); cut as 50, 50, 50, 50 the
    average is the data's own mean and variance again. Equal sizes keep Algorithm 1 exactly
    as written (frozen weights, cumulative average), changing only how D_k is batched.

    Why random draws: data sets are often stored class by class, and a class-sorted batch has
    a small within-batch variance, which the average of per-batch variances would then
    underestimate.
    """
    if n < 2:
        raise ValueError(f"calibration needs at least 2 samples (BN needs a variance), got {n}")
    n_batches = min(math.ceil(n / batch_size), n // 2)
    out = []
    for epoch in range(epochs):
        if seed is None:
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        out += list(torch.tensor_split(order, n_batches))
    return out


def calibrate_modality(
    projection: Projection,
    backbone: nn.Module,
    images: torch.Tensor,
    epochs: int = 1,
    batch_size: int = 64,
    modality: str = "",
    device: str | torch.device = "cpu",
    seed: int | None = 0,
) -> CalibratedModel:
    """Algorithm 1 for one modality: returns h_k; `projection` and `backbone` are not modified.

    `images` is D_k as one normalised tensor (N, C, H, W), visited `epochs` times in the
    random, equal-size mini-batches of `calibration_batches` (B is the largest batch). With
    E_cal=1 each running mean is the average of the per-batch means (the mean of D_k), each
    running variance the average of the per-batch unbiased variances.
    """
    if epochs < 1:
        raise ValueError(f"calibration epochs must be >= 1, got {epochs}")
    if batch_size < 2:
        raise ValueError(f"calibration batch size must be >= 2 (BN needs a variance), got {batch_size}")
    if len(images) < 2:
        raise ValueError(f"modality {modality!r}: calibration needs at least 2 training images "
                         f"(BN needs a variance), got {len(images)}")
    f_k = copy.deepcopy(projection).to(device)
    g_k = copy.deepcopy(backbone).to(device)
    _prepare_for_calibration(f_k)
    _prepare_for_calibration(g_k)
    with torch.no_grad():
        for index in calibration_batches(len(images), batch_size, epochs, seed):
            g_k(f_k(images[index].to(device)))
    return CalibratedModel(modality, f_k, g_k)


def calibrate(
    model: UMLModel,
    data: Mapping[str, torch.Tensor],
    epochs: int = 1,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, CalibratedModel]:
    """Algorithm 1 for every modality in `data` (modality -> its training images)."""
    return {
        k: calibrate_modality(model.projection(k), model.backbone, x, epochs, batch_size, k, device)
        for k, x in data.items()
    }
