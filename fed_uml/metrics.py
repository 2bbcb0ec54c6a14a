"""The task of a data set and its metrics: single-label (top-1 accuracy) or multi-label (mAP, F1).

Why a module of its own: the training loop, the methods and the institutions compute the
same metrics the same way. Which metrics a task has and what they are called is part of the
results schema (`fed_uml.results.TASK_METRICS`, `PRIMARY_METRIC`); this module computes them.

Tasks (the setting ``dataset.task``)
    ``single_label``  targets are class indices (N,), the loss is the cross-entropy, the
                      metric is top-1 accuracy (the study's protocol).
    ``multi_label``   targets are multi-hot (N, C), the loss is the binary cross-entropy on
                      the logits (`torch.nn.functional.binary_cross_entropy_with_logits`,
                      averaged over samples and classes, as torchgeo's BigEarthNet task
                      does), and the metrics are, on the sigmoid scores:

      ``map_macro``  mean over classes of the average precision AP_c, over the classes with
                     at least one positive in the evaluated set (AP is undefined without
                     one; `average_precision` returns NaN for it and the mean leaves it out);
      ``map_micro``  the average precision of all (sample, class) decisions pooled;
      ``f1_macro``   mean over classes of F1_c = 2 TP / (2 TP + FP + FN) at the threshold
                     0.5 on the sigmoid score, over the classes that are positive in the
                     targets or in the predictions (F1 is 0/0 for a class absent from both).

    AP is the non-interpolated step-wise average precision of scikit-learn's
    `average_precision_score`: AP = sum_n (R_n - R_{n-1}) P_n over the distinct score
    thresholds in decreasing order (tied scores form one threshold), which is also
    torchmetrics' `MultilabelAveragePrecision`. It is written here (a few lines of torch)
    rather than imported, to keep scikit-learn out of the dependencies; the tests check it on
    inputs with values known from scikit-learn's documentation and by hand.

The task is read from the shape of the targets (`task_of`): (N,) class indices are
single-label, (N, C) multi-hot targets are multi-label.

Decision thresholds (the setting ``decision``; what a multi-label model file records)
    A deployed multi-label model predicts class c where its sigmoid score is >= the class's
    threshold t_c. ``decision.thresholds=fixed`` gives every class ``decision.threshold``
    (0.5, the threshold of ``f1_macro``); ``tuned`` gives each class the threshold that
    maximises its F1 on the scores and targets it is tuned on (`tune_thresholds`; the model
    file tunes on the model's own training data). Single-label models take the argmax and
    ignore the setting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from fed_uml.errors import SettingsError
from fed_uml.schema import DecisionSettings, typed

THRESHOLD = DecisionSettings.threshold  # on the sigmoid score, for F1: the `decision.threshold` default
THRESHOLD_CHOICES = ("fixed", "tuned")


def task_of(targets: torch.Tensor) -> str:
    """`multi_label` for (N, C) multi-hot targets, `single_label` for (N,) class indices."""
    if targets.ndim == 2:
        return "multi_label"
    if targets.ndim == 1:
        return "single_label"
    raise ValueError(f"targets must be (N,) class indices or (N, C) multi-hot, got shape {tuple(targets.shape)}")


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-column average precision of `scores` (N, C) against binary `targets` (N, C).

    scikit-learn's definition (step-wise, ties as one threshold); NaN for a column without a
    positive.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    targets = torch.as_tensor(targets).to(torch.float64)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores and targets must both be (N, C); got {tuple(scores.shape)} and "
                         f"{tuple(targets.shape)}")
    out = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    for c in range(scores.shape[1]):
        y = targets[:, c]
        positives = y.sum()
        if positives <= 0:
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        s, t = scores[order, c], y[order]
        tp, fp = torch.cumsum(t, 0), torch.cumsum(1 - t, 0)
        # the last index of every distinct score: one threshold per distinct value
        last = torch.ones(len(s), dtype=torch.bool)
        last[:-1] = s[1:] != s[:-1]
        tp, fp = tp[last], fp[last]
        precision = tp / (tp + fp)
        recall = tp / positives
        previous = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
        out[c] = ((recall - previous) * precision).sum()
    return out


def _nanmean(values: torch.Tensor) -> float:
    keep = ~torch.isnan(values)
    return float(values[keep].mean()) if bool(keep.any()) else math.nan


def map_macro(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean AP over the classes with at least one positive."""
    return _nanmean(average_precision(scores, targets))


def map_micro(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """AP of every (sample, class) decision pooled."""
    return float(average_precision(torch.as_tensor(scores).reshape(-1, 1), torch.as_tensor(targets).reshape(-1, 1))[0])


def f1_macro(scores: torch.Tensor, targets: torch.Tensor, threshold: float = THRESHOLD) -> float:
    """Mean per-class F1 at `threshold` over the classes positive in the targets or the predictions."""
    pred = torch.as_tensor(scores) >= threshold
    y = torch.as_tensor(targets).bool()
    tp = (pred & y).sum(0).double()
    fp = (pred & ~y).sum(0).double()
    fn = (~pred & y).sum(0).double()
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(denom, math.nan))
    return _nanmean(f1)


def multi_label_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """{map_macro, map_micro, f1_macro} of logits (N, C) against multi-hot targets (N, C)."""
    if len(targets) == 0:
        raise ValueError("no samples to score")
    scores = torch.sigmoid(logits.double())
    return {"map_macro": map_macro(scores, targets), "map_micro": map_micro(scores, targets),
            "f1_macro": f1_macro(scores, targets)}


def task_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The metrics of the targets' task (`TASK_METRICS`), from the logits (N, C)."""
    if task_of(targets) == "multi_label":
        return multi_label_metrics(logits, targets)
    return {"accuracy": (logits.argmax(1) == targets).float().mean().item()}


def decision_settings(cfg: Mapping[str, Any] | DecisionSettings) -> DecisionSettings:
    """The checked `decision` settings.

    Of a run's config (`cfg["decision"]`, schema defaults where absent) or as they are
    (`fed_uml.schema.DecisionSettings`).
    """
    if isinstance(cfg, DecisionSettings):
        decision = cfg
    else:
        group = cfg.get("decision") or {}
        if not isinstance(group, Mapping):
            raise SettingsError(f"setting decision must be a mapping {{threshold, thresholds}}, got {group!r}")
        decision = typed(DecisionSettings, group, "decision.")
    if not 0 < decision.threshold < 1:
        raise SettingsError(f"setting decision.threshold must be a number strictly between 0 and 1 (a "
                            f"sigmoid score), got {decision.threshold!r}")
    if decision.thresholds not in THRESHOLD_CHOICES:
        raise SettingsError(f"setting decision.thresholds must be one of {THRESHOLD_CHOICES}, "
                            f"got {decision.thresholds!r}")
    return decision


def tune_thresholds(scores: torch.Tensor, targets: torch.Tensor, default: float = THRESHOLD) -> list[float]:
    """Per class, the threshold on `scores` (N, C) that maximises the class's F1.

    F1 against the multi-hot `targets` (N, C), predicting the class where score >= threshold.

    The candidates are the distinct scores (every different decision there is); among those
    with the highest F1 the highest one wins (the fewest positives), and the threshold is set
    half-way between it and the next lower score, so that a score a little below the lowest
    kept one on new data is treated like the scores below it. A class without a positive has
    no F1 to maximise and keeps `default`.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    targets = torch.as_tensor(targets).bool()
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores and targets must both be (N, C); got {tuple(scores.shape)} and "
                         f"{tuple(targets.shape)}")
    out = []
    for c in range(scores.shape[1]):
        y = targets[:, c]
        positives = int(y.sum())
        if positives == 0:
            out.append(float(default))
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        s, t = scores[order, c], y[order].double()
        tp = torch.cumsum(t, 0)
        predicted = torch.arange(1, len(s) + 1, dtype=torch.float64)
        last = torch.ones(len(s), dtype=torch.bool)  # the last index of each distinct score
        last[:-1] = s[1:] != s[:-1]
        index = torch.nonzero(last).flatten()
        f1 = 2 * tp[index] / (predicted[index] + positives)  # 2 TP / (2 TP + FP + FN)
        best = int(index[int(torch.argmax(f1))])  # argmax: the first maximum, the highest score
        lower = float(s[best + 1]) if best + 1 < len(s) else None
        out.append(float(s[best]) if lower is None else (float(s[best]) + lower) / 2)
    return out
