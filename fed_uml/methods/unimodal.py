"""`method=unimodal`: the baseline, one model per modality trained alone, and its step budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fed_uml.methods.registry import register_method
from fed_uml.methods.runner import build_model, evaluate_with_calibration, train_settings
from fed_uml.modality import ModalityData
from fed_uml.schema.convert import typed
from fed_uml.schema.methods import UnimodalSettings
from fed_uml.training import seed_everything, train_unpaired
from fed_uml.training.loop import epoch_steps

UNIMODAL_BUDGETS = ("matched", "epochs")


def unimodal_steps_per_epoch(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> int | None:
    """Optimiser steps per epoch of each unimodal model under `method.budget`.

    `matched` (default): the steps modality k gets inside the joint UML run on the same data,
    one pass over the LARGEST modality per epoch, so that method and baseline take the same
    number of optimiser steps (batches of B from D_k) per modality. `epochs`: one pass over
    D_k's own data per epoch, which gives a small modality up to n_max / n_k times fewer
    steps alone than inside UML (None: the loop's default).
    """
    budget = typed(UnimodalSettings, cfg["method"], "method.").budget
    if budget not in UNIMODAL_BUDGETS:
        raise ValueError(f"method.budget must be one of {UNIMODAL_BUDGETS}, got {budget!r}")
    if budget == "epochs":
        return None
    return epoch_steps({k: d.train for k, d in data.items()}, train_settings(cfg).batch_size)


@register_method("unimodal")
def run_unimodal(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The baseline: the same architecture and optimiser steps, one model per modality, trained alone."""
    settings = train_settings(cfg)
    steps = unimodal_steps_per_epoch(data, cfg)
    out = {}
    for k, d in data.items():
        g = seed_everything(settings.seed)
        model = build_model(cfg["model"], {k: d})
        history = train_unpaired(model, {k: d.train}, settings, generator=g, desc=f"unimodal {k}",
                                 steps_per_epoch=steps)
        out.update(evaluate_with_calibration(model, {k: d}, cfg))
        out[k]["optimizer_steps"] = sum(r["steps"] for r in history)
    return out
