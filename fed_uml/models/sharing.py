"""Which tensors institutions share and which stay private, decided by module type.

Shared: the learnable parameters of the `Backbone` (what federated averaging exchanges).
Private: everything inside a `Projection`, and every buffer (BatchNorm running statistics
and counters) anywhere: BN statistics describe one modality's data and are recomputed by
calibration, so they never leave an institution.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fed_uml.models.uml import Projection


def split_state_keys(model: nn.Module) -> tuple[list[str], list[str]]:
    """Return (shared keys, private keys) of `model.state_dict()`, in state-dict order."""
    shared: set[str] = set()

    def walk(module: nn.Module, prefix: str, inside_projection: bool) -> None:
        inside_projection = inside_projection or isinstance(module, Projection)
        if not inside_projection:
            for name, _ in module.named_parameters(recurse=False):
                shared.add(prefix + name)
        for child_name, child in module.named_children():
            walk(child, f"{prefix}{child_name}.", inside_projection)

    walk(model, "", False)
    keys = list(model.state_dict().keys())
    return [k for k in keys if k in shared], [k for k in keys if k not in shared]


def shared_state_keys(model: nn.Module) -> list[str]:
    """State keys of the shared part of `model` (the backbone): what institutions send."""
    return split_state_keys(model)[0]


def shared_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The tensors an institution may send: backbone parameters only (detached, on CPU)."""
    state = model.state_dict()
    return OrderedDict((k, state[k].detach().cpu()) for k in shared_state_keys(model))


def private_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The tensors that never leave an institution: projections and all BN buffers."""
    state = model.state_dict()
    return OrderedDict((k, state[k].detach().cpu()) for k in split_state_keys(model)[1])
