"""Per-modality summaries of the institutions' reports.

A round's training and test metrics for the history, and the final per-modality results
(`fed_uml.results.modality_result`).

Every mean here is `weighted_means`: each institution weighs by the examples its report is
about (training examples for training metrics, test examples for accuracies and the
multi-label metrics). For mAP and F1 this is the example-weighted mean of the institutions'
own values, not the value on the union of their test shares (which no one holds).

Metrics follow the run's task (`fed_uml.results.TASK_METRICS`): `accuracy` for single-label
runs; `map_macro`, `map_micro`, `f1_macro` for multi-label ones (the reports' `scores`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fed_uml.federated.protocol import CalibrateReport, EvaluateReport, TrainReport
from fed_uml.results import modality_result
from server.roster import Member


def weighted_means(rows: Iterable[tuple[str, float, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """{group: {name: sum(w * value) / sum(w)}} of rows (group, w, {name: value}).

    Groups in the order they first appear.
    """
    sums: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for group, weight, values in rows:
        s = sums.setdefault(group, {})
        for name, value in values.items():
            s[name] = s.get(name, 0.0) + weight * value
        totals[group] = totals.get(group, 0.0) + weight
    return {g: {name: v / totals[g] for name, v in s.items()} for g, s in sums.items()}


def _flat(means: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{mod}/{name}": v for mod, values in means.items() for name, v in values.items()}


def _without_none(values: Mapping[str, float | None]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v is not None}


def report_metrics(accuracy: float | None, scores: Mapping[str, float]) -> dict[str, float]:
    """A report's task metrics {name: value}: {"accuracy"} (single-label) or its `scores` (multi-label)."""
    return {"accuracy": accuracy} if accuracy is not None else dict(scores)


def train_metrics(reports: Iterable[tuple[str, TrainReport]]) -> dict[str, float]:
    """`<modality>/train_loss` and (single-label) `<modality>/train_accuracy` of one round."""
    return _flat(weighted_means(
        (mod, float(r.num_examples), _without_none({"train_loss": r.train_loss, "train_accuracy": r.train_accuracy}))
        for mod, r in reports))


def evaluation_metrics(reports: Iterable[tuple[str, EvaluateReport]]) -> dict[str, float]:
    """`<modality>/test_<metric>` of one round.

    `test_accuracy`, or `test_map_macro`, `test_map_micro`, `test_f1_macro`.
    """
    return _flat(weighted_means(
        (mod, float(r.num_examples), {f"test_{k}": v for k, v in report_metrics(r.accuracy, r.scores).items()})
        for mod, r in reports))


def calibration_results(reports: Sequence[tuple[Member, CalibrateReport]], modalities: Sequence[str],
                        calibrated: bool) -> tuple[dict[str, dict], list[dict]]:
    """(per-modality results in the order of `modalities`, per-institution entries)."""
    def before_after(r: CalibrateReport) -> dict[str, float]:
        before = report_metrics(r.accuracy_before_calibration, r.scores_before)
        after = report_metrics(r.accuracy_after_calibration, r.scores_after)
        return {**{f"{k}_before_calibration": v for k, v in before.items()},
                **{f"{k}_after_calibration": v for k, v in after.items()}}

    means = weighted_means((m.modality, float(r.num_examples), before_after(r)) for m, r in reports)
    results = {}
    for mod in modalities:
        if mod not in means:
            continue
        mine = [r for m, r in reports if m.modality == mod]
        names = [k[: -len("_before_calibration")] for k in means[mod] if k.endswith("_before_calibration")]
        results[mod] = modality_result(
            {k: means[mod][f"{k}_before_calibration"] for k in names},
            {k: means[mod][f"{k}_after_calibration"] for k in names}, calibrated,
            n_train=sum(r.n_train for r in mine), n_test=sum(r.num_examples for r in mine), institutions=len(mine),
        )
    per_institution = [{
        **m.as_dict(),
        **before_after(r),
        # whether it wrote its model to its own disk (the model never reaches the server)
        "model_saved": r.model_saved,
    } for m, r in reports]
    return results, per_institution
