"""The index table of a store: every patch of every official split of one sensor, read once.

Why apart from the pixels: the unpaired deal needs the records of EVERY modality it deals among
(`dataset.unpaired_among`), while an institution decodes only its own, so the index of a sensor
is kept on its own (`<store root>/index/<data set>-<sensor>-<digest>.npz`) and its pixels in the
modality's store. Building it runs the reader's own indexing once (BigEarthNet v1's per-patch
JSON, reBEN's metadata.parquet, SEN12MS's land-cover patches or its label file, the split
files); runs then read this table instead, in the same order, so the label rule and the deal
see exactly the records the readers would give.

Each split is indexed with `on_error=skip`, keeping the problems in file order; a run with
`dataset.on_error=raise` raises the first one of the splits it uses, as the reader would. A
split whose index file is missing is kept as that error, raised only by a run that uses it.
The key (`index_key`) holds the reader, sensor and data set folder and the size and mtime of
the index files at the folder's top level (and its `splits/`, `labels/`): editing a split file
or the parquet makes a new index; per-patch files edited in place are not seen
(`dataset.store.rebuild=always` prepares anew).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fed_uml.data.errors import DataError
from fed_uml.data.real.settings import RealModality, RealSettings
from fed_uml.data.scenes import SceneDataset, SceneRecord, check_disjoint_splits
from fed_uml.data.store.layout import FORMAT_VERSION
from fed_uml.data.store.locking import store_lock
from fed_uml.errors import SettingsError

log = logging.getLogger(__name__)

INDEX_FILES_IN = ("", "splits", "labels")


@dataclass
class SensorIndex:
    """Every indexed patch of one sensor, all splits in the reader's `SPLITS` order.

    Every record's `files` holds its row in the store ("row"); built by the readers they also
    hold the reader's files (what preparing pixels needs), loaded from disk only "folder" where
    the reader had one (error messages name it).
    """

    key: str
    records: list[SceneRecord]
    splits: dict[str, tuple[int, int]]  # split -> (first row, end row)
    split_errors: dict[str, DataError]  # splits whose index file could not be read
    skipped: dict[str, list[DataError]]  # split -> files left out, in file order
    readers: dict[str, SceneDataset] | None = None  # split -> reader (only when built here)

    def rows(self, split: str) -> range:
        """The index rows of `split`."""
        first, end = self.splits.get(split, (0, 0))
        return range(first, end)

    def reader(self) -> SceneDataset | None:
        """A reader of the sensor (for its band and size constants), or None when none was opened."""
        return next(iter(self.readers.values()), None) if self.readers else None


def data_folder(s: RealSettings, spec: RealModality) -> Path:
    """The data set's own folder, as its reader finds it (raises when it is not there)."""
    if s.download:
        return spec.reader.download(s.root, s.folders.get(spec.sensor)).resolve()
    return spec.reader.locate(s.root, s.folders.get(spec.sensor)).resolve()


def index_key(s: RealSettings, spec: RealModality) -> str:
    """A digest of everything that shapes the index (module docstring)."""
    folder = data_folder(s, spec)
    files = []
    for sub in INDEX_FILES_IN:
        d = folder / sub if sub else folder
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    st = p.stat()
                    files.append([str(p.relative_to(folder)), st.st_size, st.st_mtime_ns])
    payload = {"format": FORMAT_VERSION, "reader": f"{spec.reader.__module__}.{spec.reader.__qualname__}",
               "sensor": spec.sensor, "folder": str(folder), "index_files": files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def index_path(root: Path, s: RealSettings, spec: RealModality, key: str) -> Path:
    """Where the index of `spec`'s sensor with settings digest `key` is kept."""
    return root / "index" / f"{s.name}-{spec.sensor}-{key}.npz"


def build_index(s: RealSettings, spec: RealModality, key: str) -> SensorIndex:
    """Index every official split with the data set's reader (its own files, read once)."""
    records: list[SceneRecord] = []
    splits, split_errors, skipped, readers = {}, {}, {}, {}
    for split in spec.reader.SPLITS:
        first = len(records)
        try:
            ds = spec.reader(s.root, split=split, sensor=spec.sensor, bands=spec.bands, image_size=s.image_size,
                             folder=s.folders.get(spec.sensor), download=False, on_error="skip")
        except DataError as e:
            split_errors[split] = e
            continue
        readers[split] = ds
        # the row of each patch in the modality's store travels with the record through the deal
        records.extend(replace(r, files={**r.files, "row": first + i}) for i, r in enumerate(ds.records))
        skipped[split] = list(ds.skipped)
        splits[split] = (first, len(records))
    # official splits that share a scene are refused before a table of them is kept
    check_disjoint_splits(list(readers.values()))
    return SensorIndex(key, records, splits, split_errors, skipped, readers)


def save_index(path: Path, index: SensorIndex, classes: int) -> None:
    """The table as .npz (fixed-width byte strings, multi-hot labels), written atomically."""
    recs = index.records
    folder = [str(r.files.get("folder", "")) for r in recs]
    multi_hot = np.zeros((len(recs), classes), dtype=np.uint8)
    for i, r in enumerate(recs):
        multi_hot[i, list(r.labels)] = 1
    meta = {
        "format": FORMAT_VERSION, "key": index.key, "splits": index.splits,
        "split_errors": {k: [e.path, e.problem] for k, e in index.split_errors.items()},
        "skipped": {k: [[e.path, e.problem] for e in v] for k, v in index.skipped.items()},
        "has_labels": any(r.labels for r in recs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, scene=np.array([r.scene for r in recs], dtype=bytes),
                 group=np.array([r.group for r in recs], dtype=bytes),
                 label=np.array([r.label for r in recs], dtype=np.int64), labels=multi_hot,
                 folder=np.array(folder, dtype=bytes), meta=np.array(json.dumps(meta)))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_index(path: Path) -> SensorIndex:
    """The table saved by `save_index`, as records {"row": n} in the saved order."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT_VERSION:
            raise DataError(path, f"index of store format {meta.get('format')}, this fed-uml writes {FORMAT_VERSION}")
        scene, group, label = z["scene"], z["group"], z["label"]
        labels, folder = z["labels"], z["folder"]
    splits = {k: tuple(v) for k, v in meta["splits"].items()}
    split_of = np.empty(len(scene), dtype=object)
    for split, (first, end) in splits.items():
        split_of[first:end] = split
    rows_labels = [tuple(np.flatnonzero(row).tolist()) for row in labels] if meta["has_labels"] else None
    records = []
    for i in range(len(scene)):
        files = {"row": i}
        if folder[i]:
            files["folder"] = folder[i].decode()  # a str: 100,000 Paths would cost 40 MB more
        records.append(SceneRecord(scene=scene[i].decode(), label=int(label[i]), split=split_of[i],
                                   group=group[i].decode(), labels=rows_labels[i] if rows_labels else (),
                                   files=files))
    return SensorIndex(meta["key"], records, splits,
                       {k: DataError(*v) for k, v in meta["split_errors"].items()},
                       {k: [DataError(*e) for e in v] for k, v in meta["skipped"].items()})


def sensor_index(s: RealSettings, spec: RealModality, root: Path, build: bool) -> SensorIndex | None:
    """The index of `spec`'s sensor.

    From the store root if there, else built by the readers and saved (`build`), else None.
    """
    key = index_key(s, spec)
    path = index_path(root, s, spec, key)
    if path.is_file():
        try:
            return load_index(path)
        except (OSError, ValueError, KeyError) as e:
            log.warning("index %s unreadable (%s); indexing again", path, e)
    if not build:
        return None
    with store_lock(path):
        if path.is_file():
            try:
                return load_index(path)
            except (OSError, ValueError, KeyError):
                pass
        log.info("%s %s: indexing every split (read once, kept in %s)", s.name, spec.sensor, path)
        index = build_index(s, spec, key)
        save_index(path, index, len(spec.reader.CLASSES))
        return index


def pooled(index: SensorIndex, split_names: list[str], on_error: str,
           skipped: list[DataError]) -> list[SceneRecord]:
    """The records of `split_names` in order.

    Index problems raised (on_error=raise) or added to `skipped`, as the readers would; a split
    whose index file is missing raises.
    """
    recs: list[SceneRecord] = []
    for split in split_names:
        if split not in index.splits and split not in index.split_errors:
            raise SettingsError(f"unknown split {split!r} in dataset.train_splits/test_split; choose from "
                                f"{sorted([*index.splits, *index.split_errors])}")
        if split in index.split_errors:
            raise index.split_errors[split]
        problems = index.skipped.get(split, [])
        if problems and on_error == "raise":
            raise problems[0]
        skipped.extend(problems)
        recs.extend(index.records[i] for i in index.rows(split))
    return recs
