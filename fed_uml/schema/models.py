"""The `model` settings: one schema per backbone (fed_uml/models/backbones.py), each a choice of the group."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class ModelSettings:
    """What every architecture has: the backbone, where the projection ends, how it starts."""

    backbone: str = MISSING
    """The registered backbone (`model=<name>` picks the whole group)."""
    specific_layers: int = 1
    """Backbone stages that form each modality's projection (the rest is shared)."""
    projection_init: str = "aligned"
    """aligned: every modality's projection starts from one random draw (first conv adapted to
    its channel count by timm's rule), so all modalities speak one channel code at step 0;
    independent: one random draw per modality."""


@dataclass
class SmallCNNSettings(ModelSettings):
    """Fast CPU backbone: 4 conv stages; stage 0 is each modality's projection."""

    backbone: str = "small_cnn"
    width: int = 32
    """Channels of stage 0 (then 2x, 4x, 4x)."""


@dataclass
class ResNet18Settings(ModelSettings):
    """torchvision ResNet-18 (random init); its stem is each modality's projection."""

    backbone: str = "resnet18"
    small_input: bool = True
    """A 3x3 stride-1 conv stem without the max-pool, so that 32-64 px tiles keep a few pixels in
    layer4 (false: the ImageNet 7x7 stride-2 stem and max-pool)."""


# backbone name -> its settings: the choices of the `model` group
MODELS: dict[str, type[ModelSettings]] = {cls.backbone: cls for cls in (SmallCNNSettings, ResNet18Settings)}
