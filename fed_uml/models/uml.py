"""The UML model: modality-specific projections f_k feeding one shared backbone g.

A sample x of modality k is classified as g(f_k(x)). The projection is private to the
modality (and, in federated runs, to the institution); the backbone, classifier included,
is what institutions share.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fed_uml.models.registry import get_stage_builder


class Projection(nn.Sequential):
    """The modality-specific front of the network (f_k): takes C_k channels to the backbone's width."""

    def __init__(self, modality: str, in_channels: int, stages: list[nn.Module]):
        super().__init__(*stages)
        self.modality = modality
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"modality {self.modality!r} expects input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}: the channel count must match the modality's projection"
            )
        return super().forward(x)


class Backbone(nn.Sequential):
    """The shared part of the network (g): the remaining stages and the classifier."""


class UMLModel(nn.Module):
    """Projections per modality plus one shared backbone; `forward(x, modality)`."""

    def __init__(self, projections: Mapping[str, Projection], backbone: Backbone, num_classes: int):
        super().__init__()
        if not projections:
            raise ValueError("a UML model needs at least one modality")
        self.projections = nn.ModuleDict(dict(projections))
        self.backbone = backbone
        self.num_classes = num_classes

    @property
    def modalities(self) -> list[str]:
        return list(self.projections.keys())

    def projection(self, modality: str) -> Projection:
        if modality not in self.projections:
            raise KeyError(f"unknown modality {modality!r}; this model has {self.modalities}")
        return self.projections[modality]

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.backbone(self.projection(modality)(x))


def create_model(
    backbone: str,
    modalities: Mapping[str, int],
    num_classes: int,
    specific_layers: int = 1,
    **backbone_kwargs,
) -> UMLModel:
    """Build a UML model.

    Args:
        backbone: registered backbone name (`small_cnn`, `resnet18`, ...).
        modalities: modality name -> number of input channels.
        num_classes: size of the common label set.
        specific_layers: how many leading stages are modality-specific (>= 1); the rest,
            and the classifier, are shared. All stages specific gives heterogeneous encoders
            with a shared classifier (the domain-adaptation baselines).
        backbone_kwargs: passed to the backbone builder (e.g. `width` for `small_cnn`).
    """
    build = get_stage_builder(backbone)
    if not modalities:
        raise ValueError("no modalities given (setting dataset.modalities)")
    for name, chans in modalities.items():
        if not isinstance(chans, int) or chans < 1:
            raise ValueError(f"modality {name!r}: in_channels must be a positive int, got {chans!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")

    projections = {}
    shared_stages = head = None
    for name, chans in modalities.items():
        stages, stage_head = build(chans, num_classes, **backbone_kwargs)
        if not 1 <= specific_layers <= len(stages):
            raise ValueError(
                f"model.specific_layers={specific_layers} is out of range for {backbone!r}: "
                f"it has {len(stages)} stages (use {len(stages)} to share only the classifier)"
            )
        projections[name] = Projection(name, chans, stages[:specific_layers])
        if shared_stages is None:
            shared_stages, head = stages[specific_layers:], stage_head
    return UMLModel(projections, Backbone(*shared_stages, head), num_classes)
