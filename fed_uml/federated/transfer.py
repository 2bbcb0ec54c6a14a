"""Backbone tensors on the wire: Flower ArrayRecords in float32 or float16."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord

WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def to_wire(state: Mapping[str, torch.Tensor], dtype: str = "float32") -> ArrayRecord:
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"federated.transfer_dtype must be one of {sorted(WIRE_DTYPES)}, got {dtype!r}")
    target = WIRE_DTYPES[dtype]
    return ArrayRecord(
        OrderedDict((k, v.detach().cpu().to(target) if v.is_floating_point() else v.detach().cpu())
                    for k, v in state.items())
    )


def from_wire(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """Tensors back in float32 (integer tensors keep their dtype)."""
    state = record.to_torch_state_dict()
    return OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in state.items())
