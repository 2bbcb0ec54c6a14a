"""Which institutions train in a round, and how their backbones are averaged.

Sampling: each round `fraction_train` of an averaging group's institutions is drawn (at least
one) with the strategy's own seeded generator, whose state goes into the server's checkpoint.
Evaluation and the final calibration draw `fraction_evaluate` / `fraction_calibrate` of each
modality's institutions the same way (1.0, the default: every institution; calibrating every
institution at the end is what gives each its deployed model).

Averaging: institutions send only backbone parameters, so plain FedAvg over what arrives is
already backbone-only averaging. Two additions: replies travelling in float16 are averaged in
float32, and `weighting="modality"` gives every modality the same total weight in a round
(each institution weighs by its share of its modality's examples), so that a modality with
many or large institutions cannot dominate the shared backbone. `weighting="mixed"` lies
between the two: with both sets of weights normalised to sum to 1 over the round's replies,
w = (1 - weighting_mix) * examples + weighting_mix * modality (0: examples, 1: modality), one
knob for how much a small modality is lifted against how much a large one gives up
(docs/results.md, the weighting comparison). `weights` is the one place the server computes
averaging weights; secure aggregation (server/secure.py) pre-scales by it too.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from flwr.app import ArrayRecord, Message
from flwr.serverapp.strategy import FedAvg

from fed_uml.federated.protocol import AGGREGATION_WEIGHT, ARRAYS, METRICS, TrainReport
from fed_uml.federated.transfer import as_float32

WEIGHTINGS = ("examples", "modality", "mixed")


class BackboneFedAvg(FedAvg):
    """FedAvg of the backbone only, per averaging group, with seeded sampling of institutions."""

    def __init__(self, weighting: str = "examples", fraction_train: float = 1.0, seed: int = 0,
                 fraction_evaluate: float = 1.0, fraction_calibrate: float = 1.0, weighting_mix: float = 0.5,
                 **kwargs):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"federated.weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if not 0 <= weighting_mix <= 1:  # also refuses NaN
            raise ValueError(f"federated.weighting_mix must lie in [0, 1], got {weighting_mix!r}")
        for name, fraction in (("fraction_train", fraction_train), ("fraction_evaluate", fraction_evaluate),
                               ("fraction_calibrate", fraction_calibrate)):
            if not 0 < fraction <= 1:  # also refuses NaN
                raise ValueError(f"federated.{name} must lie in (0, 1], got {fraction!r}")
        kwargs.setdefault("min_train_nodes", 1)
        kwargs.setdefault("min_available_nodes", 1)
        super().__init__(fraction_train=float(fraction_train), fraction_evaluate=float(fraction_evaluate),
                         weighted_by_key=AGGREGATION_WEIGHT, **kwargs)
        self.fraction_calibrate = float(fraction_calibrate)
        self.weighting = weighting
        self.weighting_mix = float(weighting_mix)
        self.rng = random.Random(int(seed))

    # -- sampling ------------------------------------------------------------------------------
    def sample(self, nodes: Sequence[int], fraction: float | None = None) -> list[int]:
        """`fraction` (default `fraction_train`) of `nodes`, at least one, drawn by the seeded generator."""
        fraction = self.fraction_train if fraction is None else fraction
        k = max(1, int(round(len(nodes) * fraction)))
        return self.rng.sample(list(nodes), k) if k < len(nodes) else list(nodes)

    # -- weighting and averaging -----------------------------------------------------------------
    def weights(self, examples: Sequence[float], modalities: Sequence[str]) -> list[float]:
        """Aggregation weight of each reply, from its training examples and its modality."""
        n = [float(x) for x in examples]
        if self.weighting == "examples":
            return n
        per_modality = defaultdict(float)
        for m, ni in zip(modalities, n, strict=True):
            per_modality[m] += ni
        by_modality = [ni / per_modality[m] for m, ni in zip(modalities, n, strict=True)]
        if self.weighting == "modality":
            return by_modality
        total, groups, a = sum(n), len(per_modality), self.weighting_mix
        return [(1 - a) * ni / total + a * mi / groups for ni, mi in zip(n, by_modality, strict=True)]

    def aggregate(self, server_round: int, replies: Sequence[Message], modalities: Sequence[str]) -> ArrayRecord | None:
        """The weighted mean (float32) of the backbones in `replies`.

        `modalities[i]` is the modality of the institution that sent `replies[i]` (the server knows
        it by node id).
        """
        replies = list(replies)
        examples = [TrainReport.from_content(m.content).num_examples for m in replies]
        for msg, weight in zip(replies, self.weights(examples, modalities), strict=True):
            msg.content[METRICS][AGGREGATION_WEIGHT] = weight
            msg.content[ARRAYS] = as_float32(msg.content[ARRAYS])
        arrays, _ = super().aggregate_train(server_round, replies)
        return arrays
