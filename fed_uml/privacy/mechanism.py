"""Clipping an institution's backbone update, and the Gaussian mechanism on their weighted sum.

An update is the difference between the backbone an institution returns and the one it was
sent; only backbone tensors are ever in it (the projection and every BN statistic stay at the
institution). Clipping scales the whole update (all tensors together) to L2 norm at most C.

The server adds N(0, (z C)^2) to every element of the weighted sum of clipped updates, each
weight at most 1 (pre-scaled so the largest is 1), so adding or removing one institution moves
the sum by at most C: the Gaussian mechanism with noise multiplier z. The mean is that noisy
sum divided by the sum of the (public) weights. With adaptive clipping (Andrew et al. 2021,
as Flower's `DifferentialPrivacy*AdaptiveClipping`) each institution also says whether its
update was within C; the server noises that count with stddev sigma_b and moves C
geometrically towards the target quantile; the update noise is then z_delta =
(z^-2 - (2 sigma_b)^-2)^-1/2 so that the two releases together cost what z alone would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fed_uml.privacy.settings import PrivacySettings


def global_norm(update: Mapping[str, np.ndarray]) -> float:
    """L2 norm of all tensors of `update` together."""
    return float(math.sqrt(sum(float(np.sum(np.square(np.asarray(v, dtype=np.float64)))) for v in update.values())))


def clip_update(update: Mapping[str, np.ndarray], clipping_norm: float) -> tuple[dict[str, np.ndarray], bool]:
    """(`update` scaled to L2 norm at most `clipping_norm`, whether it already was within it)."""
    norm = global_norm(update)
    within = norm <= clipping_norm
    scale = 1.0 if within else clipping_norm / norm
    # float64 while scaling, so that the clipped norm is <= C up to float64 rounding
    out = {k: (np.asarray(v, dtype=np.float64) * scale) for k, v in update.items()}
    if not within and global_norm(out) > clipping_norm:  # rounding: shave the last ulp
        out = {k: v * (clipping_norm / global_norm(out)) * (1 - 1e-12) for k, v in out.items()}
    return out, within


class GaussianSumMechanism:
    """Noise on the weighted sum of clipped updates, and the clipping norm round after round."""

    def __init__(self, settings: PrivacySettings, seed: int = 0, clipping_norm: float | None = None):
        self.settings = settings
        self.clipping_norm = float(settings.clipping_norm if clipping_norm is None else clipping_norm)
        self.seed = int(seed)

    def count_stddev(self, k: int) -> float:
        """Standard deviation of the noise on the clipped count of `k` updates (adaptive clipping)."""
        return self.settings.clipped_count_stddev or k / 20

    def update_noise_multiplier(self, k: int) -> float:
        """The noise multiplier on the update sum (z; with adaptive clipping z_delta)."""
        z = self.settings.noise_multiplier
        if z == 0 or not self.settings.adaptive:
            return z
        sigma_b = self.count_stddev(k)
        if z >= 2 * sigma_b:
            raise ValueError(f"adaptive clipping with dp_noise_multiplier={z} needs a clipped-count noise stddev above "
                             f"{z / 2} (got {sigma_b}: dp_clipped_count_stddev, by default institutions/20); raise it "
                             "or use dp_clipping=fixed")
        return (z ** -2 - (2 * sigma_b) ** -2) ** -0.5

    def _rng(self, server_round: int, group: str) -> np.random.Generator:
        # seeded for reproducible research runs (docs/privacy.md); a deployment that must
        # resist a server knowing the seed draws it from the OS instead
        return np.random.default_rng([self.seed, int(server_round), sum(map(ord, group)), 0x5EC])

    def noisy_mean(self, weighted_sum: Mapping[str, np.ndarray], weight_total: float, k: int, server_round: int,
                   group: str) -> tuple[dict[str, np.ndarray], float]:
        """(noisy sum / weight_total, the noise stddev per element) for k institutions."""
        std = self.update_noise_multiplier(k) * self.clipping_norm
        rng = self._rng(server_round, group)
        out = {}
        for key in sorted(weighted_sum):
            v = np.asarray(weighted_sum[key], dtype=np.float64)
            noise = rng.normal(0.0, std, size=v.shape) if std > 0 else 0.0
            out[key] = (v + noise) / weight_total
        return out, std

    def adapt(self, unclipped: float, k: int, server_round: int, group: str) -> float:
        """The clipping norm for the next round from the count of updates that were within it."""
        if not self.settings.adaptive or k == 0:
            return self.clipping_norm
        rng = self._rng(server_round, group + "/count")
        sigma_b = self.count_stddev(k) if self.settings.noise_multiplier > 0 else 0.0
        noisy = (unclipped + (rng.normal(0.0, sigma_b) if sigma_b > 0 else 0.0)) / k
        self.clipping_norm *= math.exp(-self.settings.clip_learning_rate * (noisy - self.settings.target_quantile))
        return self.clipping_norm
