"""Paired statistics for comparing a method with its baseline over seeds.

Two arms run with the same seed share the data draw, the test set and the initialisation
seed, so their per-seed difference removes most of the seed-to-seed variance that the two
arms' separate means +/- std carry. Every comparison script reports the mean of those
differences with a 95% Student-t interval over seeds.

The unimodal baseline of record is the STRONGER of its two deployable forms, the model as
trained and the model after Algorithm 1 (BN calibration): calibration costs a user nothing
(one pass over the local training data, no labels), so a user would apply it where it helps,
and a method is credited only with what it adds beyond that (`stronger_baseline`;
docs/explanation/baselines.md says why, and why the choice is made per cell, not per seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Paired:
    """method - baseline over the seeds both arms have: mean, 95% t interval, n."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the confidence interval lies wholly on one side of zero."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        """The mean difference with its CI, scaled (e.g. to percentage points)."""
        if self.n == 0:
            return "n/a"
        if self.n < 2 or not math.isfinite(self.low):
            return f"{self.mean * scale:+.{digits}f} (n={self.n})"
        return f"{self.mean * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, nan for none)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def t_interval(values: Sequence[float], level: float = 0.95) -> Paired:
    """Mean of `values` with a two-sided Student-t interval (nan bounds for fewer than 2)."""
    n = len(values)
    m, s = mean_std(values)
    if n < 2:
        return Paired(m, math.nan, math.nan, n)
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n)
    return Paired(m, m - half, m + half, n)


def paired_difference(method: Mapping[int, float], baseline: Mapping[int, float], level: float = 0.95) -> Paired:
    """Per-seed `method[seed] - baseline[seed]` over the seeds both have, summarised by `t_interval`."""
    seeds = sorted(set(method) & set(baseline))
    return t_interval([method[s] - baseline[s] for s in seeds], level)


AS_TRAINED, CALIBRATED = "as trained", "calibrated"


def stronger_baseline(as_trained: Mapping[int, float], calibrated: Mapping[int, float]) -> tuple[dict[int, float], str]:
    """The baseline of record of one cell (one setting, data regime and modality).

    Of the baseline as trained and after Algorithm 1, per seed, the variant with the higher mean
    over the seeds both have (ties: as trained); returns (that variant's per-seed values, its name).

    Per cell, not per seed: the larger of two values per seed would pick, with the test set,
    whichever happened to score higher on that draw, which no user can do and which lifts the
    baseline by noise alone. One choice per cell is what a user who measured both would deploy.
    """
    seeds = sorted(set(as_trained) & set(calibrated))
    if not seeds:
        return dict(as_trained), AS_TRAINED
    if mean_std([calibrated[s] for s in seeds])[0] > mean_std([as_trained[s] for s in seeds])[0]:
        return {s: calibrated[s] for s in seeds}, CALIBRATED
    return {s: as_trained[s] for s in seeds}, AS_TRAINED


def stronger_baselines(as_trained: Mapping[tuple, Mapping[int, float]], calibrated: Mapping[tuple, Mapping[int, float]]
                       ) -> tuple[dict[tuple, dict[int, float]], dict[tuple, str]]:
    """`stronger_baseline` for every cell key: ({key: per-seed values}, {key: variant})."""
    values, variants = {}, {}
    for key in as_trained:
        values[key], variants[key] = stronger_baseline(as_trained[key], calibrated.get(key, {}))
    return values, variants


def paired_rows(method: Mapping[tuple, Mapping[int, float]], baseline: Mapping[tuple, Mapping[int, float]],
                key_names: Sequence[str], variants: Mapping[tuple, str] | None = None) -> list[dict]:
    """One row per key (e.g. (samples per class, modality)) that both arms have.

    The arms' means, the paired difference (accuracy fractions) with its 95% interval, and n; with
    `variants` (from `stronger_baselines`), which form of the baseline each row compares with.
    """
    rows = []
    for key in sorted(set(method) & set(baseline), key=str):
        d = paired_difference(method[key], baseline[key])
        row = {**dict(zip(key_names, key)), "n_seeds": d.n,
               "method_mean": mean_std(list(method[key].values()))[0],
               "baseline_mean": mean_std(list(baseline[key].values()))[0],
               "diff": d.mean, "ci_low": d.low, "ci_high": d.high}
        if variants is not None:
            row["baseline_variant"] = variants.get(key, AS_TRAINED)
        rows.append(row)
    return rows
