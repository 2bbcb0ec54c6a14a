"""The privacy settings of a federated run, read from its `federated` settings and checked once.

Secure aggregation (SecAgg+, Flower's `secaggplus_mod` and `SecAggPlusWorkflow` stages):
`secure_num_shares` / `secure_reconstruction_threshold` as Flower reads them (a float is a
fraction of the institutions of an averaging group, an int a count), and the quantisation
`secure_clipping_range` c, `secure_quantization_range` Q, `secure_modulus_range` M.

Differential privacy at the level of an institution: `dp_noise_multiplier` z (0: off),
`dp_clipping_norm` C (the L2 bound of an institution's backbone update), `dp_clipping`
fixed or adaptive (Andrew et al. 2021: C follows the `dp_target_quantile` of the update
norms), `dp_delta` (the delta epsilon is reported at).

Every setting that cannot work is refused here with the reason (`ValueError`); names, types
and defaults are the schema's (`fed_uml.schema.FederatedSettings`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fed_uml.schema import FederatedSettings, typed

CLIPPING_MODES = ("fixed", "adaptive")


def _federated(fed: FederatedSettings | Mapping[str, Any]) -> FederatedSettings:
    return fed if isinstance(fed, FederatedSettings) else typed(FederatedSettings, fed, "federated.")


def _finite(fed: FederatedSettings, key: str) -> Any:
    value = getattr(fed, key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"federated.{key} must be finite, got {value!r}")
    return value


@dataclass(frozen=True)
class SecureSettings:
    """The SecAgg+ settings of a run (`privacy.secure_*`)."""

    enabled: bool
    num_shares: int | float
    reconstruction_threshold: int | float
    clipping_range: float
    quantization_range: int
    modulus_range: int

    @property
    def max_institutions(self) -> int:
        """Most institutions one secure sum can hold.

        The sum of K quantised values (each at most Q) and of the K weight factors (Q each) must
        stay below the modulus M.
        """
        return self.modulus_range // self.quantization_range - 1

    def quantisation_bound(self, weights: Iterable[float]) -> float:
        """Largest difference, per backbone element, between the secure and the plain weighted mean.

        The mean of K updates with (pre-scaling) weights `weights` (largest 1): each institution's
        stochastic rounding is off by less than one step 2c/Q, so the sum by less than K steps, and
        the mean, divided by the sum of the weights, by K * 2c / (Q * sum(weights)). Holds when no
        pre-scaled update element lies outside [-c, c].
        """
        weights = [float(w) for w in weights]
        if not weights:
            return 0.0
        return len(weights) * 2 * self.clipping_range / (self.quantization_range * sum(weights))

    def threshold_for(self, k: int) -> tuple[int, int]:
        """(shares, reconstruction threshold) Flower's SecAggPlusWorkflow uses for k institutions."""
        if isinstance(self.num_shares, float):
            shares = round(self.num_shares * k)
            if shares < k and shares % 2 == 0:
                shares += 1
            if shares <= 2:
                shares = k
        else:
            shares = self.num_shares
        if isinstance(self.reconstruction_threshold, float):
            threshold = max(round(self.reconstruction_threshold * shares), 2)
        else:
            threshold = self.reconstruction_threshold
        return shares, threshold

    def check_group(self, group: str, k: int) -> None:
        """Refuse a secure round of `k` institutions that SecAgg+ cannot run."""
        if k < 2:
            raise ValueError(f"secure aggregation of group {group!r} needs at least 2 institutions in a round, "
                             f"got {k} (with 1 the server would see its update in the clear)")
        if k > self.max_institutions:
            raise ValueError(f"secure aggregation of group {group!r}: {k} institutions overflow the modulus "
                             f"(at most M/Q - 1 = {self.max_institutions}); raise secure_modulus_range or lower "
                             "secure_quantization_range")
        shares, threshold = self.threshold_for(k)
        if shares > k:
            raise ValueError(f"secure aggregation of group {group!r}: secure_num_shares={shares} exceeds its {k} "
                             "institutions")
        if k < threshold:
            raise ValueError(f"secure aggregation of group {group!r}: {k} institutions in a round, fewer than "
                             f"the reconstruction threshold {threshold} (secure_reconstruction_threshold)")


@dataclass(frozen=True)
class PrivacySettings:
    """The differential-privacy settings of a run (`privacy.dp_*`)."""

    noise_multiplier: float
    clipping_norm: float
    clipping: str
    target_quantile: float
    clip_learning_rate: float
    clipped_count_stddev: float  # 0: K/20 (Andrew et al.; Flower's default)
    delta: float

    @property
    def enabled(self) -> bool:
        """Updates are clipped (and, with z > 0, noised) on the server's aggregate."""
        return self.clipping_norm > 0

    @property
    def adaptive(self) -> bool:
        """Whether the clipping norm adapts to a quantile of the update norms."""
        return self.enabled and self.clipping == "adaptive"


def secure_settings(fed: FederatedSettings | Mapping[str, Any]) -> SecureSettings:
    """The checked secure-aggregation settings of the `federated` settings (typed, or the config group)."""
    fed = _federated(fed)
    enabled = fed.secure_aggregation
    shares = _finite(fed, "secure_num_shares")
    threshold = _finite(fed, "secure_reconstruction_threshold")
    c = float(_finite(fed, "secure_clipping_range"))
    q = fed.secure_quantization_range
    m = fed.secure_modulus_range
    if isinstance(shares, float) and not 0 < shares <= 1:
        raise ValueError(f"federated.secure_num_shares as a fraction must lie in (0, 1], got {shares}")
    if isinstance(shares, int) and shares != 1 and shares <= 2:
        raise ValueError(f"federated.secure_num_shares as a count must be greater than 2, got {shares}")
    if isinstance(threshold, float) and not 0 < threshold <= 1:
        raise ValueError(f"federated.secure_reconstruction_threshold as a fraction must lie in (0, 1], got {threshold}")
    if isinstance(threshold, int) and threshold < 2:
        raise ValueError(f"federated.secure_reconstruction_threshold as a count must be at least 2, got {threshold}")
    if isinstance(shares, int) and isinstance(threshold, int) and threshold >= shares and shares != 1:
        raise ValueError(f"federated.secure_reconstruction_threshold={threshold} must be less than "
                         f"secure_num_shares={shares}")
    if not c > 0:
        raise ValueError(f"federated.secure_clipping_range must be > 0, got {c}")
    if not isinstance(q, int) or q <= 1:
        raise ValueError(f"federated.secure_quantization_range must be an integer > 1, got {q!r}")
    if not isinstance(m, int) or m <= q or m > 2**32 or bin(m).count("1") != 1:
        raise ValueError(f"federated.secure_modulus_range must be a power of 2 above secure_quantization_range "
                         f"and at most 2**32 (Flower's masks are 32-bit), got {m!r}")
    return SecureSettings(enabled, 1.0 if shares == 1 else shares, 1.0 if threshold == 1 else threshold, c, q, m)


def privacy_settings(fed: FederatedSettings | Mapping[str, Any]) -> PrivacySettings:
    """The checked differential-privacy settings of the `federated` settings (typed, or the config group)."""
    fed = _federated(fed)
    z = float(_finite(fed, "dp_noise_multiplier"))
    clip = float(_finite(fed, "dp_clipping_norm"))
    mode = fed.dp_clipping
    quantile = float(_finite(fed, "dp_target_quantile"))
    lr = float(_finite(fed, "dp_clip_learning_rate"))
    count_std = float(_finite(fed, "dp_clipped_count_stddev"))
    delta = float(_finite(fed, "dp_delta"))
    if z < 0:
        raise ValueError(f"federated.dp_noise_multiplier must be >= 0 (0: no noise), got {z}")
    if clip < 0:
        raise ValueError(f"federated.dp_clipping_norm must be > 0, got {clip}")
    if z > 0 and clip == 0:
        raise ValueError(f"federated.dp_noise_multiplier={z} needs a clipping norm: dp_clipping_norm is 0, so an "
                         "institution's update is unbounded and no noise makes it private")
    if mode not in CLIPPING_MODES:
        raise ValueError(f"federated.dp_clipping must be one of {CLIPPING_MODES}, got {mode!r}")
    if not 0 < quantile < 1:
        raise ValueError(f"federated.dp_target_quantile must lie in (0, 1), got {quantile}")
    if not lr > 0:
        raise ValueError(f"federated.dp_clip_learning_rate must be > 0, got {lr}")
    if count_std < 0:
        raise ValueError(f"federated.dp_clipped_count_stddev must be >= 0 (0: institutions/20), got {count_std}")
    if not 0 < delta < 1:
        raise ValueError(f"federated.dp_delta must lie in (0, 1), got {delta}")
    settings = PrivacySettings(z, clip, mode, quantile, lr, count_std, delta)
    if settings.enabled and fed.transfer_dtype != "float32":
        raise ValueError("differential privacy needs transfer_dtype=float32: an institution clips its update "
                         "in float32, and the float16 cast of its reply then moves every backbone element by up to "
                         "2**-11 of its magnitude, more than a typical update element: what reaches the server "
                         "is no longer the clipped update (secure aggregation sends integers either way)")
    return settings
