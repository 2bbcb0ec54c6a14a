"""Step 2 of assembling a real data set: the label set, the same for every modality.

Why a step of its own: which classes a study has is decided once, on the pooled training
scenes of all modalities together and before the unpaired deal, so that every modality
(and every federated institution loading one of them) ends up with the same label set.
Multi-label data sets (BigEarthNet v1, v2) first go through the balanced single-label rule
(`dataset.balanced`, see `fed_uml.data.splits`); then `dataset.classes` may restrict the
set, `dataset.num_classes` must match it, and the labels are renumbered to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from fed_uml.data import splits as sp
from fed_uml.data.real.index import Pools
from fed_uml.data.real.settings import RealSettings

log = logging.getLogger(__name__)


@dataclass
class LabelSet:
    """The classes kept, the pools relabelled to them, and what the single-label rule did."""

    class_names: tuple[str, ...]
    pools: Pools  # as indexed, but only scenes of kept classes, labels renumbered
    rule_report: dict | None  # None for single-label data sets


def choose_label_set(cfg: Mapping, s: RealSettings, pools: Pools) -> LabelSet:
    """Apply the single-label rule (multi-label data sets) and the class settings to `pools`."""
    classes = s.classes
    rule_report = None
    if s.multi_label:
        pools, rule_report, keep = single_label_rule(cfg, s, pools)
    else:
        keep = list(range(len(classes)))
    wanted = cfg.get("classes")
    if wanted:
        unknown = [c for c in wanted if c not in classes]
        if unknown:
            raise ValueError(
                f"dataset {s.name!r}: unknown class(es) {unknown} in dataset.classes; known: {list(classes)}"
            )
        keep = [i for i in keep if classes[i] in set(wanted)]
    if not keep:
        raise ValueError(f"dataset {s.name!r}: no class is left after the label rule and dataset.classes")
    class_names = tuple(classes[i] for i in keep)
    expected = cfg.get("num_classes")
    if expected is not None and int(expected) != len(class_names):
        raise ValueError(
            f"dataset {s.name!r}: setting dataset.num_classes={expected}, but the label set has "
            f"{len(class_names)} classes {list(class_names)}; set dataset.classes and dataset.num_classes to match"
        )
    pools = {kind: {m: sp.relabel(pools[kind][m], keep) for m in s.among} for kind in pools}
    if rule_report is not None:
        rule_report["classes"] = list(class_names)
    return LabelSet(class_names, pools, rule_report)


def single_label_rule(cfg: Mapping, s: RealSettings, pools: Pools) -> tuple[Pools, dict, list[int]]:
    """Keep the single-label scenes, then the classes with enough of them in the training pool.

    Returns the filtered pools, the report that goes to `info["label_rule"]`, and the
    indices of the classes retained (on the training pool of all modalities together).
    """
    classes = s.classes
    balanced = dict(cfg.get("balanced") or {})
    rule = str(balanced.get("rule", "exactly_one"))
    report = {"rule": rule, "min_per_class": int(balanced.get("min_per_class", 1)), "splits": {}}
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
