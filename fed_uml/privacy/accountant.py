"""The privacy an institution has spent: epsilon at delta after every round.

Google's `dp-accounting` (the accountant behind TensorFlow Privacy, maintained separately
and with no deep-learning framework attached), its Renyi-DP accountant: each round of a
group is a Poisson-subsampled Gaussian mechanism (sampling rate q = the fraction of the
group's institutions that trained, noise multiplier z), rounds compose. The project draws
a fixed-size subset without replacement each round; the Poisson analysis at q = k/n is the
standard stand-in (DP-FedAvg, McMahan et al. 2018; Flower's and Opacus' accountants do the
same) and is exact at q = 1, the default (every institution trains every round: no
amplification). Adjacency: adding or removing one whole institution.

An institution takes part only in its own averaging group (one for UML, one per modality
for the unimodal baseline), so the run's epsilon is the largest over the groups.
"""

from __future__ import annotations

import math
from typing import Any


def epsilon(steps: list[tuple[float, float]], delta: float) -> float:
    """Epsilon at `delta` after the rounds `steps`, each (sampling rate q, noise multiplier z)."""
    if not steps:
        return 0.0
    if any(z <= 0 for q, z in steps if q > 0):
        return math.inf
    # imported here: dp-accounting (with scipy) takes over a second to import, which a run
    # without differential privacy, and every ClientApp process, need not pay
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    # the library's default Renyi orders (1.25 ... 512)
    accountant = rdp_privacy_accountant.RdpAccountant(list(rdp_privacy_accountant.DEFAULT_RDP_ORDERS))
    runs: list[list[Any]] = []  # consecutive identical rounds composed at once
    for q, z in steps:
        if runs and runs[-1][0] == (q, z):
            runs[-1][1] += 1
        else:
            runs.append([(q, z), 1])
    for (q, z), count in runs:
        accountant.compose(dp_event.PoissonSampledDpEvent(float(q), dp_event.GaussianDpEvent(float(z))), count)
    return float(accountant.get_epsilon(float(delta)))


class PrivacyAccountant:
    """The rounds of every averaging group so far; epsilon of the run (the largest)."""

    def __init__(self, delta: float):
        self.delta = float(delta)
        self.steps: dict[str, list[tuple[float, float]]] = {}

    def record(self, group: str, sampling_rate: float, noise_multiplier: float) -> None:
        """Record one round of `group` with its sampling rate and noise multiplier."""
        self.steps.setdefault(group, []).append((float(sampling_rate), float(noise_multiplier)))

    def epsilon(self) -> float:
        """The largest epsilon over the groups at the accountant's delta."""
        return max((epsilon(s, self.delta) for s in self.steps.values()), default=0.0)

    def restore(self, history: list[dict[str, Any]]) -> None:
        """The rounds recorded in a run's history (a resumed run goes on counting)."""
        self.steps = {}
        for record in history:
            for group, (q, z) in (record.get("dp_steps") or {}).items():
                self.record(group, q, z)
