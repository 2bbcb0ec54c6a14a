"""`method=pooled`: the positive control's upper reference, one model on the union of the modalities' data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fed_uml.methods.registry import register_method
from fed_uml.methods.runner import build_model, calibrate_from_config, train_settings
from fed_uml.modality import ArrayDataset, ModalityData
from fed_uml.results import modality_result
from fed_uml.schema import settings_of
from fed_uml.training import evaluate_task, seed_everything, train_unpaired


@register_method("pooled")
def run_pooled(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The positive control's upper reference: one model on the UNION of the modalities' data.

    Only meaningful when the "modalities" are one sensor split in parts (equal bands): then
    UML on the parts should approach this model, which sees all the data through one
    projection. An epoch is one pass over the pooled data; each part's test set is scored.
    """
    bands = {k: tuple(d.band_names) for k, d in data.items()}
    if len(set(bands.values())) != 1 or len({d.channels for d in data.values()}) != 1:
        raise ValueError(f"method=pooled needs modalities of one sensor with the same bands; got {bands}")
    use_calibrated = settings_of(cfg).method.calibrate
    settings = train_settings(cfg)
    g = seed_everything(settings.seed)
    first = next(iter(data.values()))
    # `[:]` reads a streamed modality's images into memory (the pooled control is a small-data check)
    train = ArrayDataset(torch.cat([d.train.images[:] for d in data.values()]),
                         torch.cat([d.train.labels for d in data.values()]))
    pooled = ModalityData("pooled", train, train, first.class_names, first.band_names, dict(first.info))
    model = build_model(cfg["model"], {"pooled": pooled})
    history = train_unpaired(model, {"pooled": train}, settings, generator=g, desc="pooled")
    calibrated = calibrate_from_config(model, {"pooled": train.images}, cfg)["pooled"]
    device = settings.device
    steps = sum(r["steps"] for r in history)
    out = {}
    for k, d in data.items():
        before = evaluate_task(model, d.test, "pooled", device=device)
        after = evaluate_task(calibrated, d.test, device=device)
        out[k] = modality_result(before, after, use_calibrated, len(train), len(d.test), optimizer_steps=steps)
    return out
