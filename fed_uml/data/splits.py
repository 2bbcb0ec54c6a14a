"""Which scenes each modality gets: the unpaired split, per-class subsets, the single-label rule.

Unpaired protocol
    Where a data set holds co-registered sensors (BigEarthNet S1/S2, SEN12MS, EuroSAT MS
    vs EuroSAT-SAR, or two band subsets of the same EuroSAT tiles), giving every modality
    the same scenes would hand the model paired data through the back door. So within each
    split the scenes are dealt out to the modalities *disjointly*: every scene id (or, for
    SEN12MS, every region of interest, whose patches overlap) goes to at most one modality.
    The deal is stratified by class and seeded (`dataset.seed`), so each modality keeps
    about the same class balance, and it respects each modality's quota
    (`samples_per_class`), so a small modality does not waste scenes a large one could use.

Low-data regime
    `samples_per_class` (int, or {modality: int}; null = all) keeps the first n scenes of
    each class in a seeded random order; a class that has fewer than n is kept whole and the
    shortfall is reported in `ModalityData.info["class_counts"]` and the log.

Balanced single-label rule (multi-label data sets: BigEarthNet v1 and v2)
    1. Map every patch's labels to the 19-class nomenclature (v1: the standard 43 -> 19
       mapping; labels without a 19-class counterpart are dropped, as in torchgeo).
    2. Keep the patches that carry *exactly one* 19-class label; that label is the class.
    3. Keep the classes that have at least `balanced.min_per_class` such patches in the
       training pool (before the unpaired deal); the others leave the label set, for all
       modalities alike.
    4. With `balanced.undersample: true`, cut every class of each modality and split to the
       size of its smallest non-empty class (random, seeded), so classes are balanced.
    The counts after every step go to `ModalityData.info["label_rule"]` and
    `info["class_counts"]`, are logged, and `write_class_counts` writes them to JSON or CSV.
    This is `dataset.task=single_label`; with `dataset.task=multi_label` (the default for
    BigEarthNet) every patch keeps all its labels (`fed_uml.data.real.labels.multi_label_set`).

Multi-label stratification
    A multi-label patch has no single class to stratify by, so `stratify_by_rarest_label`
    gives it a stratum, its rarest label (by training frequency), in `SceneRecord.label`;
    the deal, the per-class quotas (`samples_per_class` then counts patches per stratum) and
    the federated Dirichlet partition (`fed_uml.federated.partition`) use that stratum.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from fed_uml.data.scenes import SceneRecord

if TYPE_CHECKING:
    from fed_uml.modality import ModalityData

T = TypeVar("T")


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the given names (stable across runs)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed)] + [zlib.crc32(k.encode()) for k in keys]))


def shuffled(items: Sequence[T], seed: int, *keys: str) -> list[T]:
    """`items` in a permutation seeded by `seed` and `keys`."""
    order = rng_for(seed, *keys).permutation(len(items))
    return [items[i] for i in order]


def by_class(records: Sequence[SceneRecord]) -> dict[int, list[SceneRecord]]:
    """The records grouped by class label."""
    out: dict[int, list[SceneRecord]] = defaultdict(list)
    for r in records:
        out[r.label].append(r)
    return dict(out)


def assign_disjoint(
    pools: Mapping[str, Sequence[SceneRecord]],
    seed: int,
    quotas: Mapping[str, int | None] | None = None,
    key: str = "",
) -> dict[str, list[SceneRecord]]:
    """Deal the scenes of one split to the modalities so that no unit goes to two of them.

    `pools` maps each modality to the records it could use (its sensor's records of the
    split). A unit (scene, or group) is given to one modality that has it; among those,
    the one with the fewest scenes of that class so far (ties rotate between classes), and
    never to one whose per-class quota is full. Units that every eligible modality has no
    room for stay unused. Groups holding several scenes (SEN12MS regions) are dealt whole,
    by total count rather than per class.
    """
    names = list(pools)
    quotas = dict(quotas or {})
    unit_records: dict[str, dict[str, list[SceneRecord]]] = defaultdict(lambda: defaultdict(list))
    for m, recs in pools.items():
        for r in recs:
            unit_records[r.unit][m].append(r)
    units = shuffled(sorted(unit_records), seed, "unpaired", key)
    out: dict[str, list[SceneRecord]] = {m: [] for m in names}
    grouped = any(len(v) > 1 for per_m in unit_records.values() for v in per_m.values())
    if grouped:
        total = {m: 0 for m in names}
        for i, u in enumerate(units):
            eligible = [m for m in names if m in unit_records[u]]
            if not eligible:
                continue
            rot = i % len(names)
            order = sorted(eligible, key=lambda m: (total[m], (names.index(m) - rot) % len(names)))
            m = order[0]
            out[m].extend(unit_records[u][m])
            total[m] += len(unit_records[u][m])
        return out
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for u in units:
        per_m = unit_records[u]
        label = next(iter(per_m.values()))[0].label
        eligible = [
            m for m in names
            if m in per_m and ((quota := quotas.get(m)) is None or counts[(m, label)] < int(quota))
        ]
        if not eligible:
            continue
        rot = label % len(names)
        m = min(eligible, key=lambda m: (counts[(m, label)], (names.index(m) - rot) % len(names)))
        out[m].append(per_m[m][0])
        counts[(m, label)] += 1
    return out


def per_class_subset(records: Sequence[SceneRecord], n: int | None, seed: int, *keys: str) -> list[SceneRecord]:
    """At most n records of each class, in a seeded random order (n=None: all, shuffled)."""
    out = []
    for label, recs in sorted(by_class(records).items()):
        recs = shuffled(sorted(recs, key=lambda r: r.scene), seed, "subset", str(label), *keys)
        out.extend(recs if n is None else recs[: int(n)])
    return out


def undersample_balanced(records: Sequence[SceneRecord], seed: int, *keys: str) -> list[SceneRecord]:
    """Cut every class to the size of the smallest non-empty class (seeded)."""
    groups = by_class(records)
    if not groups:
        return []
    n = min(len(v) for v in groups.values())
    return per_class_subset(records, n, seed, "balance", *keys)


def single_label(records: Sequence[SceneRecord], rule: str = "exactly_one") -> tuple[list[SceneRecord], dict[str, Any]]:
    """Apply the single-label rule to multi-label records; return the kept ones and counts."""
    if rule != "exactly_one":
        raise ValueError(f"setting dataset.balanced.rule must be 'exactly_one', got {rule!r}")
    kept = [replace(r, label=r.labels[0]) for r in records if len(r.labels) == 1]
    report = {
        "rule": rule,
        "patches": len(records),
        "single_label": len(kept),
        "multi_label": sum(1 for r in records if len(r.labels) > 1),
        "no_label": sum(1 for r in records if not r.labels),
    }
    return kept, report


def label_frequency(records: Iterable[SceneRecord], num_classes: int) -> np.ndarray:
    """How many of `records` carry each class (multi-label `labels`)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for r in records:
        for c in r.labels:
            counts[c] += 1
    return counts


def rarest_label(labels: Sequence[int], frequency: Sequence[int] | np.ndarray) -> int:
    """The label of `labels` with the smallest `frequency` (ties: the lower class index)."""
    return min(labels, key=lambda c: (frequency[c], c))


def stratify_by_rarest_label(records: Sequence[SceneRecord], frequency: Sequence[int] | np.ndarray
                             ) -> list[SceneRecord]:
    """Each multi-label record with its stratum, the rarest of its labels, as `label`."""
    return [replace(r, label=rarest_label(r.labels, frequency)) for r in records]


def retain_classes(train_records: Sequence[SceneRecord], num_classes: int, min_per_class: int) -> list[int]:
    """Class indices with at least `min_per_class` training scenes, in their original order."""
    counts = np.bincount([r.label for r in train_records], minlength=num_classes)
    return [c for c in range(num_classes) if counts[c] >= max(1, int(min_per_class))]


def relabel(records: Sequence[SceneRecord], keep: Sequence[int]) -> list[SceneRecord]:
    """Drop records outside `keep` and renumber labels to positions in `keep`."""
    index = {c: i for i, c in enumerate(keep)}
    return [replace(r, label=index[r.label]) for r in records if r.label in index]


def class_counts(labels: Any, class_names: Sequence[str]) -> dict[str, int]:
    """Samples per class: of class indices (N,), or positives per class of multi-hot rows (N, C)."""
    arr = np.asarray(labels.tolist() if hasattr(labels, "tolist") else list(labels), dtype=np.int64)
    if arr.ndim == 2:
        counts = arr.sum(axis=0)
    else:
        counts = np.bincount(arr, minlength=len(class_names))
    return {c: int(counts[i]) for i, c in enumerate(class_names)}


def write_class_counts(data: Mapping[str, ModalityData], path: str | Path) -> Path:
    """Write each modality's per-class counts (and label-rule counts) to JSON or, for .csv, CSV.

    `data` is what `load_dataset` returns ({modality: ModalityData}).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["modality", "split", "class", "count"])
            for m, d in data.items():
                for split, counts in d.info.get("class_counts", {}).items():
                    for cls, n in counts.items():
                        w.writerow([m, split, cls, n])
    else:
        payload = {
            m: {
                "class_names": list(d.class_names),
                "class_counts": d.info.get("class_counts", {}),
                "label_rule": d.info.get("label_rule"),
                "skipped": d.info.get("skipped", {}).get("count", 0),
            }
            for m, d in data.items()
        }
        path.write_text(json.dumps(payload, indent=2))
    return path
