"""The initial shared backbone, built on the server from settings alone (no data)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from fed_uml.models import model_from_config, shared_state


def initial_backbone(cfg: Mapping[str, Any]) -> OrderedDict[str, torch.Tensor]:
    """Backbone parameters for round 1, seeded by `seed`.

    The projection is irrelevant here (institutions keep their own), so a one-channel
    placeholder modality is used; the key names match an institution's model because the
    shared tensors all live under `backbone.`.
    """
    num_classes = cfg["dataset"].get("num_classes")
    if not num_classes:
        raise ValueError(
            f"dataset {cfg['dataset'].get('name')!r}: setting dataset.num_classes is needed to build the "
            "backbone on the server"
        )
    torch.manual_seed(int(cfg["seed"]))
    model = model_from_config(cfg["model"], {"placeholder": 1}, int(num_classes))
    return shared_state(model)
