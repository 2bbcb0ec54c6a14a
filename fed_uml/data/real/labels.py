"""Step 2 of assembling a real data set: the label set, the same for every modality.

Why a step of its own: which classes a study has is decided once, on the pooled training
scenes of all modalities together and before the unpaired deal, so that every modality
(and every federated institution loading one of them) ends up with the same label set.
Multi-label data sets (BigEarthNet v1, v2) either keep every patch with all its labels
(`dataset.task=multi_label`, `multi_label_set`) or go through the balanced single-label rule
(`dataset.task=single_label`, `dataset.balanced`, see `fed_uml.data.splits`); then
`dataset.classes` may restrict the set, `dataset.num_classes` must match it, and the labels
are renumbered to it.

Multi-label (`multi_label_set`)
    1. A patch without any label of the nomenclature (v1: every one of its 43-class labels
       lacks a 19-class counterpart) is a `DataError` naming the patch (skipped and counted
       with `dataset.on_error=skip`).
    2. `dataset.classes` restricts the label set; each patch keeps its labels in the set, and
       a patch left without any is dropped (counted as `outside_classes`).
    3. A class named in `dataset.classes` without a single training patch (pooled over the
       modalities of `dataset.unpaired_among`, before the deal) is an error naming the
       setting. With every class (`dataset.classes` null: the fixed 19-class nomenclature the
       federated backbone is built for) such classes are kept, listed in the report
       (`empty_classes`) and logged: they have no positive to learn from.
    4. Each patch is given a stratum, `SceneRecord.label`: its RAREST label, by the number of
       training patches carrying each class (pooled as in 3; ties: the lower class index). The
       unpaired deal, `samples_per_class` and the federated Dirichlet partition stratify by it,
       so rare classes are spread over the modalities (and institutions) first instead of
       being swamped by the frequent classes they co-occur with (the rarest-label rule of
       iterative stratification, Sechidis et al., ECML PKDD 2011, in its simplest form).
    The report (`info["label_rule"]`) has, per split and modality, the patches, those without
    a label, those outside `dataset.classes`, those kept, and the positives per class.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from fed_uml.data import splits as sp
from fed_uml.data.errors import DataError
from fed_uml.data.real.index import Pools
from fed_uml.data.real.settings import RealSettings

log = logging.getLogger(__name__)


@dataclass
class LabelSet:
    """The classes kept, the pools relabelled to them, and what the single-label rule did."""

    class_names: tuple[str, ...]
    pools: Pools  # as indexed, but only scenes of kept classes, labels renumbered
    rule_report: dict[str, Any] | None  # None for single-label data sets
    task: str = "single_label"  # multi_label: records keep `labels` (renumbered), `label` is the stratum


def choose_label_set(cfg: Mapping[str, Any], s: RealSettings, pools: Pools,
                     skipped: dict[str, list[DataError]] | None = None) -> LabelSet:
    """Apply the task's label rule (multi-label data sets) and the class settings to `pools`.

    `skipped` ({modality: errors}) receives the patches left out with `dataset.on_error=skip`.
    """
    if s.task == "multi_label":
        return multi_label_set(cfg, s, pools, skipped if skipped is not None else {})
    classes = s.classes
    rule_report = None
    if s.multi_label:
        pools, rule_report, keep = single_label_rule(cfg, s, pools)
    else:
        keep = list(range(len(classes)))
    keep = _wanted_classes(cfg, s, keep)
    if not keep:
        raise ValueError(f"dataset {s.name!r}: no class is left after the label rule and dataset.classes")
    class_names = tuple(classes[i] for i in keep)
    _check_num_classes(cfg, s, class_names)
    pools = {kind: {m: sp.relabel(pools[kind][m], keep) for m in s.among} for kind in pools}
    if rule_report is not None:
        rule_report["classes"] = list(class_names)
    return LabelSet(class_names, pools, rule_report)


def _wanted_classes(cfg: Mapping[str, Any], s: RealSettings, keep: list[int]) -> list[int]:
    """`keep` restricted to `dataset.classes` (an unknown name is an error naming the setting)."""
    wanted = cfg.get("classes")
    if not wanted:
        return keep
    unknown = [c for c in wanted if c not in s.classes]
    if unknown:
        raise ValueError(
            f"dataset {s.name!r}: unknown class(es) {unknown} in dataset.classes; known: {list(s.classes)}"
        )
    return [i for i in keep if s.classes[i] in set(wanted)]


def _check_num_classes(cfg: Mapping[str, Any], s: RealSettings, class_names: tuple[str, ...]) -> None:
    expected = cfg.get("num_classes")
    if expected is not None and int(expected) != len(class_names):
        raise ValueError(
            f"dataset {s.name!r}: setting dataset.num_classes={expected}, but the label set has "
            f"{len(class_names)} classes {list(class_names)}; set dataset.classes and dataset.num_classes to match"
        )


def multi_label_set(cfg: Mapping[str, Any], s: RealSettings, pools: Pools,
                    skipped: dict[str, list[DataError]]) -> LabelSet:
    """Every patch with all its labels in the label set, stratified by its rarest label (module docstring)."""
    classes = s.classes
    explicit = bool(cfg.get("classes"))
    keep = _wanted_classes(cfg, s, list(range(len(classes))))
    if not keep:
        raise ValueError(f"dataset {s.name!r}: no class is left after dataset.classes")
    index = {c: i for i, c in enumerate(keep)}
    report: dict[str, Any] = {"task": "multi_label", "stratify": "rarest_label", "splits": {}}
    kept: Pools = {kind: {} for kind in pools}
    for kind in pools:
        for m in s.among:
            recs, rep = [], {"patches": len(pools[kind][m]), "no_label": 0, "outside_classes": 0}
            for r in pools[kind][m]:
                if not r.labels:
                    rep["no_label"] += 1
                    err = DataError(r.files.get("folder", r.scene),
                                    f"patch {r.scene}: no label of the {len(classes)}-class nomenclature "
                                    "(dataset.task=multi_label needs at least one per patch)")
                    if s.on_error == "raise":
                        raise err
                    skipped.setdefault(m, []).append(err)
                    continue
                labels = tuple(sorted(index[c] for c in r.labels if c in index))
                if not labels:
                    rep["outside_classes"] += 1
                    continue
                recs.append(replace(r, labels=labels))
            rep["kept"] = len(recs)
            kept[kind][m] = recs
            report["splits"].setdefault(kind, {})[m] = rep
    class_names = tuple(classes[i] for i in keep)
    union = {r.scene: r for m in s.among for r in kept["train"][m]}
    frequency = sp.label_frequency(union.values(), len(keep))
    empty = [class_names[i] for i in range(len(keep)) if frequency[i] == 0]
    if empty and explicit:
        raise ValueError(
            f"dataset {s.name!r}: class(es) {empty} of dataset.classes have no training patch in "
            f"dataset.train_splits {s.train_splits}; remove them from dataset.classes"
        )
    if empty:
        log.warning("%s: %d of %d classes have no training patch (kept; nothing to learn them from): %s",
                    s.name, len(empty), len(keep), empty)
    _check_num_classes(cfg, s, class_names)
    for kind in kept:
        for m in s.among:
            kept[kind][m] = sp.stratify_by_rarest_label(kept[kind][m], frequency)
            counts = sp.label_frequency(kept[kind][m], len(keep))
            report["splits"][kind][m]["per_class"] = {c: int(n) for c, n in zip(class_names, counts) if n}
    report["classes"] = list(class_names)
    report["empty_classes"] = empty
    first = report["splits"]["train"][s.modalities[0]]
    log.info("%s: multi-label, %d of %d training patches kept (%s), %d classes", s.name, first["kept"],
             first["patches"], s.modalities[0], len(class_names))
    return LabelSet(class_names, kept, report, task="multi_label")


def single_label_rule(cfg: Mapping[str, Any], s: RealSettings, pools: Pools) -> tuple[Pools, dict[str, Any], list[int]]:
    """Keep the single-label scenes, then the classes with enough of them in the training pool.

    Returns the filtered pools, the report that goes to `info["label_rule"]`, and the
    indices of the classes retained (on the training pool of all modalities together).
    """
    classes = s.classes
    balanced = dict(cfg.get("balanced") or {})
    rule = str(balanced.get("rule", "exactly_one"))
    report: dict[str, Any] = {"rule": rule, "min_per_class": int(balanced.get("min_per_class", 1)), "splits": {}}
    kept: Pools = {kind: {} for kind in pools}
    for kind in pools:
        for m in s.among:
            kept[kind][m], rep = sp.single_label(pools[kind][m], rule)
            counts = sp.class_counts([r.label for r in kept[kind][m]], classes)
            rep["per_class"] = {c: n for c, n in counts.items() if n}
            report["splits"].setdefault(kind, {})[m] = rep
    union = {r.scene: r for m in s.among for r in kept["train"][m]}
    keep = sp.retain_classes(list(union.values()), len(classes), report["min_per_class"])
    report["dropped_classes"] = [c for i, c in enumerate(classes) if i not in keep]
    first = report["splits"]["train"][s.modalities[0]]
    log.info("%s: single-label rule %r kept %d of %d training patches (%s); classes kept: %s",
             s.name, rule, first["single_label"], first["patches"], s.modalities[0],
             [classes[i] for i in keep])
    return kept, report, keep
