"""Backbone tensors on the wire: Flower ArrayRecords in float32 or float16.

`to_wire` is the one place tensors are serialised for sending, `as_float32` the one place
received arrays are brought back to float32 (the server averages in float32; `from_wire`
gives an institution float32 tensors).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def to_wire(state: Mapping[str, torch.Tensor], dtype: str = "float32") -> ArrayRecord:
    """`state` as an ArrayRecord in the wire dtype `dtype` (floating tensors only; others as they are)."""
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"federated.transfer_dtype must be one of {sorted(WIRE_DTYPES)}, got {dtype!r}")
    target = WIRE_DTYPES[dtype]
    return ArrayRecord(
        OrderedDict((k, v.detach().cpu().to(target) if v.is_floating_point() else v.detach().cpu())
                    for k, v in state.items())
    )


def as_float32(record: ArrayRecord) -> ArrayRecord:
    """`record` with every floating-point array in float32 (float32 and integer arrays as they are)."""
    out = ArrayRecord()
    for key, array in record.items():
        value = array.numpy()
        if np.issubdtype(value.dtype, np.floating) and value.dtype != np.float32:
            out[key] = Array(value.astype(np.float32))
        else:
            out[key] = array
    return out


def from_wire(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """Tensors back in float32 (integer tensors keep their dtype)."""
    return OrderedDict(as_float32(record).to_torch_state_dict())
