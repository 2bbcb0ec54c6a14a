"""Backbone-only FedAvg with optional modality-balanced weights.

Institutions send only backbone parameters, so plain FedAvg over what arrives is already
backbone-only averaging. Two additions: replies travelling in float16 are averaged in
float32, and `weighting="modality"` gives every modality the same total weight in a
round (each institution weighs by its share of its modality's examples), so that a
modality with many or large institutions cannot dominate the shared backbone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

WEIGHTINGS = ("examples", "modality")
_WEIGHT_KEY = "aggregation-weight"


class BackboneFedAvg(FedAvg):
    def __init__(self, weighting: str = "examples", **kwargs):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"federated.weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        fraction = kwargs.get("fraction_train", 1.0)
        if not 0 < fraction <= 1:
            raise ValueError(f"federated.fraction_train must lie in (0, 1], got {fraction!r}")
        super().__init__(weighted_by_key=_WEIGHT_KEY, **kwargs)
        self.weighting = weighting

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        valid = [m for m in replies if not m.has_error()]
        for msg, weight in zip(valid, self.weights([m.content["metrics"] for m in valid])):
            msg.content["metrics"][_WEIGHT_KEY] = weight
            msg.content["arrays"] = _as_float32(msg.content["arrays"])
        return super().aggregate_train(server_round, replies)

    def weights(self, metrics: list[MetricRecord]) -> list[float]:
        """Aggregation weight of each reply, from `num-examples` and `modality-index`."""
        n = [float(m["num-examples"]) for m in metrics]
        if self.weighting == "examples":
            return n
        per_modality = defaultdict(float)
        for m, ni in zip(metrics, n):
            per_modality[int(m["modality-index"])] += ni
        return [ni / per_modality[int(m["modality-index"])] for m, ni in zip(metrics, n)]


def _as_float32(record: ArrayRecord) -> ArrayRecord:
    out = ArrayRecord()
    for key, array in record.items():
        value = array.numpy()
        out[key] = Array(value.astype(np.float32) if value.dtype == np.float16 else value)
    return out
