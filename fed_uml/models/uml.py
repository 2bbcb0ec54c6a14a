"""The UML model: modality-specific projections f_k feeding one shared backbone g.

A sample x of modality k is classified as g(f_k(x)). The projection is private to the
modality (and, in federated runs, to the institution); the backbone, classifier included,
is what institutions share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from fed_uml.models.registry import backbone_stages, get_stage_builder


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
        return super().forward(x)  # type: ignore[no-untyped-call]  # torch leaves Sequential.forward unannotated


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
        """The model's modalities, one projection each."""
        return list(self.projections.keys())

    def projection(self, modality: str) -> Projection:
        """The projection of `modality`; an unknown modality is an error."""
        if modality not in self.projections:
            raise KeyError(f"unknown modality {modality!r}; this model has {self.modalities}")
        return cast(Projection, self.projections[modality])

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Logits of `x` of `modality`: its projection, then the shared backbone."""
        return self.backbone(self.projection(modality)(x))


PROJECTION_INITS = ("aligned", "independent")
# The channel count of the one random draw that aligned projections are adapted from: the
# three channels timm's pretrained stems have, so the adaptation rule is timm's own.
REFERENCE_CHANNELS = 3


def create_model(
    backbone: str,
    modalities: Mapping[str, int],
    num_classes: int,
    specific_layers: int = 1,
    projection_init: str = "aligned",
    **backbone_kwargs: Any,
) -> UMLModel:
    """Build a UML model.

    Args:
        backbone: registered backbone name (`small_cnn`, `resnet18`, ...).
        modalities: modality name -> number of input channels.
        num_classes: size of the common label set.
        specific_layers: how many leading stages are modality-specific (>= 1); the rest,
            and the classifier, are shared. All stages specific gives heterogeneous encoders
            with a shared classifier (the compared domain-adaptation methods).
        projection_init: `aligned` (default): every projection starts from ONE random draw of
            the projection for `REFERENCE_CHANNELS` channels, so that all modalities feed the
            shared backbone the same channel code at step 0 (see `align_projection`); the
            shared backbone is that draw's backbone. `independent`: every projection is its
            own random draw (independent codes the backbone must reconcile during training).
        backbone_kwargs: passed to the backbone builder (e.g. `width` for `small_cnn`).
    """
    build = get_stage_builder(backbone)
    n_stages = backbone_stages(backbone)
    if not modalities:
        raise ValueError("no modalities given (setting dataset.modalities)")
    for name, chans in modalities.items():
        if not isinstance(chans, int) or chans < 1:
            raise ValueError(f"modality {name!r}: in_channels must be a positive int, got {chans!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if projection_init not in PROJECTION_INITS:
        raise ValueError(f"model.projection_init must be one of {PROJECTION_INITS}, got {projection_init!r}")
    if not 1 <= specific_layers <= n_stages:
        raise ValueError(
            f"model.specific_layers={specific_layers} is out of range for {backbone!r}: "
            f"it has {n_stages} stages (use {n_stages} to share only the classifier)"
        )

    def stages_for(chans: int) -> tuple[list[nn.Module], nn.Module]:
        stages, stage_head = build(chans, num_classes, **backbone_kwargs)
        if len(stages) != n_stages:
            raise ValueError(f"backbone {backbone!r} is registered with {n_stages} stages, "
                             f"but its builder returned {len(stages)}")
        return stages, stage_head

    # With `aligned`, every modality's network is still built in full and all but its
    # projection's structure discarded (the weights are then loaded from the reference draw):
    # the seeded global RNG stream runs through those draws, and everything drawn after the
    # model (a method's discriminator, dropout masks) depends on where it stands.
    projections = {}
    shared_stages = head = reference = None
    if projection_init == "aligned":
        ref_stages, head = stages_for(REFERENCE_CHANNELS)
        reference, shared_stages = nn.Sequential(*ref_stages[:specific_layers]), ref_stages[specific_layers:]
    for name, chans in modalities.items():
        stages, stage_head = stages_for(chans)
        projections[name] = Projection(name, chans, stages[:specific_layers])
        if reference is not None:
            align_projection(projections[name], reference)
        elif shared_stages is None:
            shared_stages, head = stages[specific_layers:], stage_head
    assert shared_stages is not None and head is not None  # `modalities` is not empty
    return UMLModel(projections, Backbone(*shared_stages, head), num_classes)


def model_from_config(model_cfg: Mapping[str, Any], channels: Mapping[str, int], num_classes: int,
                      specific_layers: int | None = None) -> UMLModel:
    """The network of a `model` config group (conf/model/*.yaml) for these modalities.

    `model_cfg` holds `backbone`, optionally `specific_layers` (default 1) and
    `projection_init`, and the backbone builder's own settings (e.g. `width`);
    `channels` maps modality -> input channel count. `specific_layers`, if given, overrides
    the config's (the compared methods make every stage modality-specific). The one place
    where a config becomes a model: the methods, the federated server and institutions, and
    a saved model file's architecture all go through it.
    """
    cfg = dict(model_cfg)
    if "backbone" not in cfg:
        raise ValueError(f"setting model.backbone is missing (got {sorted(cfg)})")
    name = cfg.pop("backbone")
    configured = int(cfg.pop("specific_layers", 1))
    specific = configured if specific_layers is None else int(specific_layers)
    return create_model(name, dict(channels), int(num_classes), specific, **cfg)


def first_conv_key(module: nn.Module) -> str:
    """State-dict key of the weight of the first `nn.Conv2d` in `module` (the input convolution)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            return f"{name}.weight" if name else "weight"
    raise ValueError("aligned projection init needs a projection that starts with an nn.Conv2d")


def align_projection(projection: Projection, reference: nn.Module) -> None:
    """Load `reference` (a projection drawn for `REFERENCE_CHANNELS` channels) into `projection`.

    The rule, timm's `adapt_input_conv` (how timm fits a pretrained RGB stem to another
    channel count): the first convolution's input-channel weights are repeated cyclically
    and cut to C_k channels, then scaled by 3 / C_k (one channel: the sum over the three);
    3 channels are copied unchanged. Every later tensor of the projection (BN, further
    convolutions when `specific_layers` > 1) is copied. So equal-channel modalities start
    bit-identical, and a 2-band SAR stem starts as the first two RGB filters times 1.5.
    """
    key = first_conv_key(reference)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    state[key] = adapt_input_conv(projection.in_channels, state[key])
    projection.load_state_dict(state, strict=True)


def adapt_input_conv(in_channels: int, weight: torch.Tensor) -> torch.Tensor:
    """The rule of timm for a first convolution drawn for `REFERENCE_CHANNELS` input channels.

    Applied to `in_channels` (`align_projection`), with timm's results bit for bit
    (`tests/test_projection_init.py` compares them for 1 to 13 channels).

    Why not timm's own function: importing timm imports torchvision, 2 s of start-up in the
    ServerApp and in every simulation actor, for these few lines; timm stays a test dependency.
    """
    out, base = weight.shape[:2]
    if base != REFERENCE_CHANNELS:
        raise ValueError(f"the reference convolution has {base} input channels, not {REFERENCE_CHANNELS}")
    dtype, w = weight.dtype, weight.float()
    if in_channels == 1:
        w = w.sum(dim=1, keepdim=True)
    elif in_channels != base:
        w = w.repeat(1, math.ceil(in_channels / base), 1, 1)[:, :in_channels] * (base / float(in_channels))
    return w.to(dtype)
