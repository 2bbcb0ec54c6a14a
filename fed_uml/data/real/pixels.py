"""Step 4 of assembling a real data set: read the chosen scenes' pixels into `ModalityData`.

Why last: only the scenes dealt to a loaded modality are decoded (a federated institution
reads its own share only), each by the reader that indexed it, in physical units
(`load_dataset` normalises). A bad file is raised, or with `dataset.on_error=skip` left out
and counted in `info["skipped"]`. `info` also records the reader, sensor, bands, image
size, the native size of the patches before resampling (`native_size`, what a model file
tells `experiments.predict` its inputs must have), the task (multi-label data get multi-hot
targets (N, C)), per-class counts (positives per class for multi-label data), the seed and
the label rule, so a result says what it was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fed_uml.data import splits as sp
from fed_uml.data.errors import DataError
from fed_uml.data.real.index import Pools, SceneIndex
from fed_uml.data.real.labels import LabelSet
from fed_uml.data.real.settings import RealSettings
from fed_uml.data.scenes import SceneRecord, native_size
from fed_uml.modality import ArrayDataset, ModalityData

log = logging.getLogger(__name__)


def read_modality(s: RealSettings, m: str, chosen: dict[str, list[SceneRecord]], index: SceneIndex,
                  labels: LabelSet) -> ModalityData:
    """Modality `m` with the records `chosen` for it ({"train"/"test": records})."""
    skipped = index.skipped[m]
    arrays, targets, scenes = {}, {}, {}
    for kind in ("train", "test"):
        imgs, targets[kind], scenes[kind] = _read_records(s, m, kind, chosen[kind], index, skipped)
        if not imgs:
            raise ValueError(empty_message(s, m, kind, labels.pools, labels.class_names))
        arrays[kind] = torch.from_numpy(np.stack(imgs).astype(np.float32, copy=False))
    return modality_data(s, m, labels, skipped, targets, scenes,
                         lambda kind, y, ids: ArrayDataset(arrays[kind], y, ids),
                         {"native_size": _native_size(index, m)})


def modality_data(s: RealSettings, m: str, labels: LabelSet, skipped: list[DataError], targets: dict[str, list[Any]],
                  scenes: dict[str, list[str]], make: Callable[[str, torch.Tensor, list[str]], ArrayDataset],
                  extra_info: dict[str, Any] | None = None) -> ModalityData:
    """`ModalityData` of modality `m` from its targets and scene ids per kind ("train"/"test").

    `make(kind, labels, scene_ids)` gives each set (in memory, or streamed from a store).
    """
    spec = s.specs[m]
    class_names = labels.class_names
    if labels.task == "multi_label":  # multi-hot targets (N, C) over the label set
        labels_ = {k: _multi_hot(targets[k], len(class_names)) for k in ("train", "test")}
    else:
        labels_ = {k: torch.tensor(targets[k], dtype=torch.long) for k in ("train", "test")}
    sets = {k: make(k, labels_[k], scenes[k]) for k in ("train", "test")}
    counts = {k: sp.class_counts(labels_[k], class_names) for k in ("train", "test")}
    if skipped:
        log.warning("%s %s: skipped %d bad file(s) (dataset.on_error=skip), e.g. %s",
                    s.name, m, len(skipped), skipped[0])
    log.info("%s %s (%s %s): train %s; test %s", s.name, m, spec.reader.NAME, ",".join(spec.bands),
             counts["train"], counts["test"])
    info = {
        "dataset": s.name,
        "reader": spec.reader.NAME,
        "sensor": spec.sensor,
        "bands": list(spec.bands),
        "image_size": int(sets["train"].images.shape[-1]),
        "task": labels.task,
        "class_counts": counts,
        "unpaired": s.unpaired,
        "seed": s.seed,
        "skipped": {"count": len(skipped), "files": [str(e) for e in skipped[:20]]},
        **(extra_info or {}),
    }
    if labels.rule_report is not None:
        info["label_rule"] = labels.rule_report
    return ModalityData(name=m, train=sets["train"], test=sets["test"], class_names=class_names,
                        band_names=spec.bands, info=info)


def _native_size(index: SceneIndex, m: str) -> list[int] | None:
    size = native_size([ds for (modality, _), ds in index.readers.items() if modality == m])
    return None if size is None else list(size)


def _multi_hot(label_sets: list[tuple[int, ...]], num_classes: int) -> torch.Tensor:
    out = torch.zeros(len(label_sets), num_classes, dtype=torch.long)
    for i, labels in enumerate(label_sets):
        out[i, list(labels)] = 1
    return out


def _read_records(s: RealSettings, m: str, kind: str, records: list[SceneRecord], index: SceneIndex,
                  skipped: list[DataError]) -> tuple[list[np.ndarray], list[Any], list[str]]:
    """The images, targets (the class, or the label tuple for multi-label) and scene ids of `records`.

    Bad files raise or go to `skipped`.
    """
    imgs, labels, ids = [], [], []
    for r in records:
        ds = index.readers[(m, r.split)]
        try:
            imgs.append(ds.load(r))
        except DataError as e:
            if s.on_error == "raise":
                raise
            skipped.append(e)
            continue
        labels.append(r.labels if s.task == "multi_label" else r.label)
        ids.append(r.scene)
    return imgs, labels, ids


def empty_message(s: RealSettings, m: str, kind: str, pools: Pools, class_names: tuple[str, ...]) -> str:
    """The error message for an empty train or test set, naming the settings to check."""
    return (
        f"dataset {s.name!r}, modality {m!r}: the {kind} set is empty (pool of "
        f"{len(pools[kind][m])} scenes over classes {list(class_names)}; check dataset.root, "
        f"dataset.{'train_splits' if kind == 'train' else 'test_split'} and the class settings)"
    )
