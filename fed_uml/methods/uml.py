"""`method=uml`: one model, a projection per modality, the shared backbone trained on all of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fed_uml.methods.registry import register_method
from fed_uml.methods.runner import build_model, evaluate_with_calibration, train_settings
from fed_uml.modality import ModalityData
from fed_uml.training import seed_everything, train_unpaired


@register_method("uml")
def run_uml(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """UML: one model, a projection per modality, the shared backbone trained on all of them."""
    settings = train_settings(cfg)
    g = seed_everything(settings.seed)
    model = build_model(cfg["model"], data)
    history = train_unpaired(model, {k: d.train for k, d in data.items()}, settings, generator=g, desc="uml")
    out = evaluate_with_calibration(model, data, cfg)
    for k in out:
        out[k]["optimizer_steps"] = sum(r["steps"] for r in history)
    return out
