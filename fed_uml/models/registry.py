"""Name -> stage builder registry for backbones (timm-style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import nn


class StageBuilder(Protocol):
    """Builds a network as an ordered list of stages plus a classification head.

    Splitting a network into stages is what lets `specific_layers` decide how many of
    them become the modality-specific projection.
    """

    def __call__(self, in_chans: int, num_classes: int, *args: Any, **kwargs: Any) -> tuple[list[nn.Module], nn.Module]:
        """(stages, head) of a backbone for `in_chans` input channels and `num_classes`."""


_REGISTRY: dict[str, StageBuilder] = {}
_STAGES: dict[str, int] = {}


def register_backbone(name: str, stages: int) -> Callable[[StageBuilder], StageBuilder]:
    """Register a stage builder under `name`; it must return exactly `stages` stages.

    The count is registered with the builder so that callers can tell how many stages a
    backbone has (e.g. to make all of them modality-specific) without building a network;
    `create_model` checks every built network against it. A name is registered once.
    """
    if not isinstance(stages, int) or stages < 1:
        raise ValueError(f"backbone {name!r}: stages must be a positive int, got {stages!r}")

    def decorator(fn: StageBuilder) -> StageBuilder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        _STAGES[name] = stages
        return fn

    return decorator


def get_stage_builder(name: str) -> StageBuilder:
    """The stage builder of backbone `name`; an unknown name is an error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r} (setting model.backbone); available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def backbone_stages(name: str) -> int:
    """How many stages the registered backbone `name` is split into (no network is built)."""
    get_stage_builder(name)  # the unknown-backbone error
    return _STAGES[name]


def available_backbones() -> list[str]:
    """Names of the backbones a config may choose."""
    return sorted(_REGISTRY)
