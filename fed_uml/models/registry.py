"""Name -> stage builder registry for backbones (timm-style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn


class StageBuilder(Protocol):
    """Builds a network as an ordered list of stages plus a classification head.

    Splitting a network into stages is what lets `specific_layers` decide how many of
    them become the modality-specific projection.
    """

    def __call__(self, in_chans: int, num_classes: int, **kwargs) -> tuple[list[nn.Module], nn.Module]: ...


_REGISTRY: dict[str, StageBuilder] = {}


def register_backbone(name: str) -> Callable[[StageBuilder], StageBuilder]:
    def decorator(fn: StageBuilder) -> StageBuilder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def get_stage_builder(name: str) -> StageBuilder:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r} (setting model.backbone); available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)
