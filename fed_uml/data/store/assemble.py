"""The real-data assembly over prepared stores.

The steps of `fed_uml.data.real`, with the index read from the store's index tables and the pixels
streamed from the modalities' stores.

Why the same steps: the label rule, the unpaired deal and the per-class subsets run on the same
records, in the same order, as the in-memory path (`fed_uml.data.real.assemble`), so a seed
chooses the same patches whichever path reads them. Then, per loaded modality:
- `dataset.storage=stream`, or `auto` when its chosen patches would take more than
  `dataset.store.stream_above_mib` MiB as float32 tensors: its store is opened (prepared on
  first use: the whole sensor's archive, every split, so any seed, task or institution share
  reads the same store) and the chosen rows are read batch by batch (`StreamedDataset`);
- otherwise (`auto`, small): read into memory by the readers, as `storage=memory` does. The
  choice depends on the settings and the data alone, never on whether a store exists, so a
  run gives the same result on a machine with or without one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from fed_uml.data.errors import DataError
from fed_uml.data.memory import check_fits
from fed_uml.data.real.deal import choose_scenes
from fed_uml.data.real.index import SceneIndex
from fed_uml.data.real.labels import LabelSet
from fed_uml.data.real.pixels import empty_message, modality_data, read_modality
from fed_uml.data.real.settings import Readers, RealSettings
from fed_uml.data.scenes import SceneRecord
from fed_uml.data.store.dataset import StoredImages, StreamedDataset
from fed_uml.data.store.index import SensorIndex, build_index, index_key, index_path, pooled, save_index, sensor_index
from fed_uml.data.store.modality_store import open_store
from fed_uml.data.store.reader import StoreFile
from fed_uml.data.store.settings import StoreSettings
from fed_uml.modality import ModalityData

log = logging.getLogger(__name__)


def load_with_store(cfg: Mapping[str, Any], s: RealSettings, st: StoreSettings,
                    saved_index: bool = True) -> dict[str, ModalityData]:
    """Every loaded modality, streamed or in memory as `dataset.storage` decides (module docstring)."""
    indexes: dict[str, SensorIndex] = {}
    for m, spec in s.specs.items():
        found = sensor_index(s, spec, st.root, build=st.mode == "stream") if saved_index else None
        indexes[m] = found if found is not None else build_index(s, spec, index_key(s, spec))
    scene_index = _scene_index(s, indexes)
    labels, chosen = choose_scenes(cfg, s, scene_index.pools, scene_index.skipped)
    streamed = {m: st.mode == "stream" or _float32_bytes(s, m, chosen[m]) > st.stream_above_mib * 2**20
                for m in s.modalities}
    if not all(streamed.values()) and any(indexes[m].readers is None for m in s.among):
        # a modality goes to memory, but the index came from a store: the readers must index
        return load_with_store(cfg, s, st, saved_index=False)
    check_fits(sum(_float32_bytes(s, m, chosen[m]) for m in s.modalities if not streamed[m]) // 4,
               f"{s.name} ({', '.join(m for m in s.modalities if not streamed[m])} in memory)",
               "dataset.samples_per_class or dataset.image_size, or dataset.storage=stream (the prepared store)")
    out = {}
    for m in s.modalities:
        if not streamed[m]:
            out[m] = read_modality(s, m, chosen[m], scene_index, labels)
            continue
        for k in s.among:  # the tables this deal came from, kept for the next run
            path = index_path(st.root, s, s.specs[k], indexes[k].key)
            if indexes[k].readers is not None and not path.is_file():
                save_index(path, indexes[k], len(s.specs[k].reader.CLASSES))
        store = open_store(s, m, indexes[m], st)
        out[m] = read_streamed(s, m, chosen[m], store, scene_index.skipped[m], labels)
    return out


def _scene_index(s: RealSettings, indexes: dict[str, SensorIndex]) -> SceneIndex:
    """The pools of the deal from the sensors' index tables, in the readers' order."""
    pools: dict[str, dict[str, list[SceneRecord]]] = {"train": {}, "test": {}}
    skipped: dict[str, list[DataError]] = {m: [] for m in s.among}
    readers = {}
    for m in s.among:
        for kind, names in (("train", s.train_splits), ("test", [s.test_split])):
            pools[kind][m] = pooled(indexes[m], names, s.on_error, skipped[m])
        for split, reader in (indexes[m].readers or {}).items():
            readers[(m, split)] = reader
    return SceneIndex(readers, pools, skipped)


def _float32_bytes(s: RealSettings, m: str, chosen: dict[str, list[SceneRecord]]) -> int:
    """What the in-memory path would hold for modality `m`: its chosen patches as float32."""
    size = s.image_size or s.specs[m].reader.NATIVE_SIZE or 0
    return sum(len(v) for v in chosen.values()) * len(s.specs[m].bands) * size * size * 4


def read_streamed(s: RealSettings, m: str, chosen: dict[str, list[SceneRecord]], store: StoreFile,
                  skipped: list[DataError], labels: LabelSet) -> ModalityData:
    """Modality `m` over its store.

    The chosen records' rows, bad files raised or skipped as the readers would.
    """
    rows: dict[str, np.ndarray] = {}
    targets: dict[str, list[Any]] = {}
    scenes: dict[str, list[str]] = {}
    for kind in ("train", "test"):
        keep, targets[kind], scenes[kind] = [], [], []
        for r in chosen[kind]:
            row = int(r.files["row"])
            if row in store.bad_rows:
                err = DataError(*store.bad_rows[row])
                if s.on_error == "raise":
                    raise err
                skipped.append(err)
                continue
            keep.append(row)
            targets[kind].append(r.labels if s.task == "multi_label" else r.label)
            scenes[kind].append(r.scene)
        if not keep:
            raise ValueError(empty_message(s, m, kind, labels.pools, labels.class_names))
        rows[kind] = np.array(keep, dtype=np.int64)
    native = s.specs[m].reader.NATIVE_SIZE  # what the readers read before resampling (model files record it)
    storage = {"storage": {"store": str(store.folder), "dtype": str(store.dtype),
                           "digest": store.manifest["plan"]["key"]},
               "native_size": [int(native), int(native)] if native else None}
    return modality_data(s, m, labels, skipped, targets, scenes,
                         lambda kind, y, ids: StreamedDataset(StoredImages(store, rows[kind]), y, ids), storage)


def prepare_stores(cfg: Mapping[str, Any], readers: Readers) -> list[dict[str, Any]]:
    """Index every modality and prepare (or verify) the store of every modality of `dataset.modalities`.

    Indexes every modality of `dataset.unpaired_among`: what `python -m experiments.prepare` does.
    Every block's checksum of an existing store is verified. Returns one summary per modality.
    """
    from dataclasses import replace

    s = RealSettings.parse(cfg, readers)
    st = replace(StoreSettings.parse(cfg), verify="always")
    indexes = {m: sensor_index(s, spec, st.root, build=True) for m, spec in s.specs.items()}
    out = []
    for m in s.modalities:
        index = indexes[m]
        assert index is not None  # build=True: made by the readers when none is saved
        store = open_store(s, m, index, st)
        size = sum((store.folder / name).stat().st_size for name in ("images.npy", "rowstats.npy"))
        out.append({"modality": m, "store": str(store.folder), "rows": store.rows, "shape": list(store.shape),
                    "dtype": str(store.dtype), "bad_rows": len(store.bad_rows), "bytes": size,
                    "skipped_at_index": sum(len(v) for v in index.skipped.values()),
                    "missing_splits": {k: str(e) for k, e in index.split_errors.items()}})
    return out
