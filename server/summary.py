"""Per-modality summaries of the institutions' reports: a round's training and test metrics
for the history, and the final per-modality results (`fed_uml.results.modality_result`).

Every mean here is `weighted_means`: each institution weighs by the examples its report is
about (training examples for training metrics, test examples for accuracies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fed_uml.federated.protocol import CalibrateReport, EvaluateReport, TrainReport
from fed_uml.results import modality_result
from server.roster import Member


def weighted_means(rows: Iterable[tuple[str, float, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """{group: {name: sum(w * value) / sum(w)}} of rows (group, w, {name: value}); groups in
    the order they first appear."""
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


def train_metrics(reports: Iterable[tuple[str, TrainReport]]) -> dict[str, float]:
    """`<modality>/train_loss` and `<modality>/train_accuracy` of one round."""
    return _flat(weighted_means(
        (mod, float(r.num_examples), {"train_loss": r.train_loss, "train_accuracy": r.train_accuracy})
        for mod, r in reports))


def evaluation_metrics(reports: Iterable[tuple[str, EvaluateReport]]) -> dict[str, float]:
    """`<modality>/test_accuracy` of one round."""
    return _flat(weighted_means((mod, float(r.num_examples), {"test_accuracy": r.accuracy}) for mod, r in reports))


def calibration_results(reports: Sequence[tuple[Member, CalibrateReport]], modalities: Sequence[str],
                        calibrated: bool) -> tuple[dict[str, dict], list[dict]]:
    """(per-modality results in the order of `modalities`, per-institution entries)."""
    means = weighted_means(
        (m.modality, float(r.num_examples), {"before": r.accuracy_before_calibration,
                                             "after": r.accuracy_after_calibration})
        for m, r in reports)
    results = {}
    for mod in modalities:
        if mod not in means:
            continue
        mine = [r for m, r in reports if m.modality == mod]
        results[mod] = modality_result(
            means[mod]["before"], means[mod]["after"], calibrated,
            n_train=sum(r.n_train for r in mine), n_test=sum(r.num_examples for r in mine), institutions=len(mine),
        )
    per_institution = [{
        **m.as_dict(),
        "accuracy_before_calibration": r.accuracy_before_calibration,
        "accuracy_after_calibration": r.accuracy_after_calibration,
        # whether it wrote its model to its own disk (the model never reaches the server)
        "model_saved": r.model_saved,
    } for m, r in reports]
    return results, per_institution
