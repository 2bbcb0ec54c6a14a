"""The base class of the real-data readers: a scene index over native files, read on demand.

Why a base class: every reader (EuroSAT, EuroSAT-SAR, BigEarthNet v1/v2, SEN12MS) must find
its folder under the data root the same way (`fed_uml.data.settings` for the convention),
raise the same "dataset not found" error, validate split, sensor and band names the same
way, and hand back samples in the same form,
``{"image": float32 tensor (C, H, W) in physical units, "label": int, "scene": str}``.
A reader first indexes a split into `SceneRecord`s from the data set's own index files
(no pixel read), so that the unpaired deal can choose scenes before any raster is decoded.
Normalisation is *not* done here (see `fed_uml.data.normalize`): readers only read.

Two checks every reader shares: a raster must have the pixel type the data set ships
(`DTYPES`, `read_tiff`), and the splits a run reads must not share a scene
(`check_disjoint_splits`: a scene in the training and the test split makes the test
score a training score).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from fed_uml.data.download import Resource, fetch_resources
from fed_uml.data.errors import DataError, DatasetNotFoundError
from fed_uml.data.raster import read_tiff, resample
from fed_uml.data.settings import ROOT_SETTING


@dataclass(frozen=True)
class SceneRecord:
    """One scene of one split, before any pixel is read.

    `scene` is the id shared by co-registered sensors (the unit the unpaired protocol keeps
    apart); `group` is the unit of disjoint assignment (a whole SEN12MS region of interest,
    whose patches overlap, or the scene itself); `labels` holds every class index of a
    multi-label scene, `label` the single class once a rule has picked it (-1 before).
    """

    scene: str
    label: int
    split: str
    group: str = ""
    labels: tuple[int, ...] = ()
    files: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def unit(self) -> str:
        """The unit a split keeps together: the scene's group (e.g. its tile), else the scene."""
        return self.group or self.scene


class SceneDataset(Dataset[dict[str, torch.Tensor | int | str]]):
    """Base class of the real-data readers (torchgeo style: one subclass per data set).

    A subclass declares its metadata as class constants (`NAME`, `FOLDER` under the data
    root, `CLASSES`, `SENSORS` {sensor: band names in file order}, `SPLITS`, `NATIVE_SIZE`,
    `MULTI_LABEL`, `RESOURCES` for `download`) and implements `_index` (the scene records of
    a split, from the native index files) and `_read` (the pixels of one record for one
    sensor). A missing data set is a `DatasetNotFoundError` naming the folder looked for
    and the setting to change. Samples are dicts {"image": float32 (C, H, W) in physical
    units, "label": int, "scene": str}.
    """

    NAME: ClassVar[str] = ""
    FOLDER: ClassVar[str] = ""
    CLASSES: ClassVar[tuple[str, ...]] = ()
    SENSORS: ClassVar[dict[str, tuple[str, ...]]] = {}
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    NATIVE_SIZE: ClassVar[int | None] = None
    # Several labels per scene: the loader applies the single-label rule (fed_uml.data.splits).
    MULTI_LABEL: ClassVar[bool] = False
    RESOURCES: ClassVar[tuple[Resource, ...]] = ()
    # {sensor: the numpy pixel types its GeoTIFFs are shipped in}; a sensor not listed is not checked
    DTYPES: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sensor: str | None = None,
        bands: Sequence[str] | None = None,
        image_size: int | None = None,
        folder: str | None = None,
        download: bool = False,
        on_error: str = "raise",
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"setting dataset.on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.skipped: list[DataError] = []
        if split not in self.SPLITS:
            raise ValueError(f"{self.NAME}: unknown split {split!r}; choose from {list(self.SPLITS)}")
        self.sensor = sensor or next(iter(self.SENSORS))
        if self.sensor not in self.SENSORS:
            raise ValueError(
                f"{self.NAME}: unknown sensor {self.sensor!r}; choose from {sorted(self.SENSORS)}"
            )
        self.bands = self.check_bands(self.sensor, bands)
        self.band_index = [self.SENSORS[self.sensor].index(b) for b in self.bands]
        self.image_size = int(image_size) if image_size else None
        self.split = split
        if download:
            self.download(root, folder)
        self.root = self.locate(root, folder)
        # the file that lists the split (set by `_index`), named when splits overlap
        self.index_file: Path | None = None
        # the (H, W) sizes of the patches read so far, before resampling (`native_size`)
        self.sizes_read: set[tuple[int, int]] = set()
        self.records: list[SceneRecord] = self._index(split)

    # -- metadata -------------------------------------------------------------------
    @classmethod
    def check_bands(cls, sensor: str, bands: Sequence[str] | None) -> tuple[str, ...]:
        """The bands to read of `sensor` (all of them when `bands` is empty); unknown bands are an error."""
        allowed = cls.SENSORS[sensor]
        bands = tuple(bands) if bands else allowed
        unknown = [b for b in bands if b not in allowed]
        if unknown or not bands:
            raise ValueError(
                f"{cls.NAME}: unknown band(s) {unknown} for sensor {sensor!r}; choose from {list(allowed)}"
            )
        return bands

    # -- locating and fetching ----------------------------------------------------------
    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        """Whether `path` itself has this data set's layout (subclasses refine this)."""
        return False

    @classmethod
    def locate(cls, root: str | Path, folder: str | None = None) -> Path:
        """The data set's folder: <root>/<FOLDER>, or the root itself if it has the layout."""
        root = Path(root)
        sub = root / (folder or cls.FOLDER)
        if sub.is_dir():
            return sub
        if root.is_dir() and cls.looks_like_root(root):
            return root
        raise DatasetNotFoundError(
            f"{cls.NAME} not found: looked for {sub} (and for the layout in {root} itself). "
            f"Set {ROOT_SETTING} to the folder holding {folder or cls.FOLDER}/, "
            "or set dataset.download=true to fetch it."
        )

    @classmethod
    def download(cls, root: str | Path, folder: str | None = None) -> Path:
        """Fetch and unpack `RESOURCES` into <root>/<FOLDER> unless the data are already there."""
        target = Path(root) / (folder or cls.FOLDER)
        try:
            return cls.locate(root, folder)
        except DatasetNotFoundError:
            pass
        if not cls.RESOURCES:
            raise DatasetNotFoundError(f"{cls.NAME} has no download source; place it under {target}")
        fetch_resources(cls.RESOURCES, target)
        return target

    # -- samples ----------------------------------------------------------------------
    def _problem(self, err: DataError) -> None:
        """Raise a per-file problem, or (on_error=skip) keep it so that the skip is reported."""
        if self.on_error == "raise":
            raise err
        self.skipped.append(err)

    def _index(self, split: str) -> list[SceneRecord]:
        raise NotImplementedError

    def _read(self, record: SceneRecord) -> np.ndarray:
        """All of the sensor's bands of one record, (C, H, W) float32 in physical units."""
        raise NotImplementedError

    def read_tiff(self, path: str | Path) -> np.ndarray:
        """A GeoTIFF of this data set's sensor, refused unless in the pixel type the data set ships."""
        return read_tiff(path, self.DTYPES.get(self.sensor), f"{self.NAME} sensor {self.sensor!r}")

    def load(self, record: SceneRecord) -> np.ndarray:
        """The selected bands of one record at `image_size`, checked for NaN/inf."""
        arr = self._read(record)
        self.sizes_read.add((int(arr.shape[1]), int(arr.shape[2])))
        arr = arr[self.band_index]
        return resample(arr, self.image_size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int | str]:
        r = self.records[i]
        return {"image": torch.from_numpy(np.ascontiguousarray(self.load(r))), "label": r.label, "scene": r.scene}


def check_disjoint_splits(datasets: Sequence[SceneDataset], shown: int = 5) -> None:
    """Refuse readers of different splits of one sensor that list a scene in common.

    The error names both split files and the first shared scenes (in the later file's order).
    """
    by_split: dict[str, SceneDataset] = {}
    for ds in datasets:
        by_split.setdefault(ds.split, ds)
    readers = list(by_split.values())
    for i, a in enumerate(readers):
        scenes_a = {r.scene for r in a.records}
        for b in readers[i + 1:]:
            shared = [r.scene for r in b.records if r.scene in scenes_a]
            if shared:
                first = ", ".join(dict.fromkeys(shared[:shown]))
                raise DataError(
                    b.index_file or b.root,
                    f"the {b.split} split lists {len(shared)} scene(s) that the {a.split} split "
                    f"({a.index_file or a.root}) lists too, first {first}: splits must not share scenes "
                    "(a scene trained on and tested on gives a training score); fix the split files",
                )


def native_size(datasets: Sequence[SceneDataset]) -> tuple[int, int] | None:
    """The one patch size (H, W) the readers read before resampling, or None if they read several."""
    sizes = set().union(*(ds.sizes_read for ds in datasets)) if datasets else set()
    return next(iter(sizes)) if len(sizes) == 1 else None


# ---------------------------------------------------------------- index-file helpers


def read_text_lines(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a text index file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(path, f"cannot read: {e}") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_of(name: str, classes: Sequence[str], source: str | Path) -> int:
    """The index of a class name; an unknown name is an error that names where it came from."""
    try:
        return tuple(classes).index(name)
    except ValueError:
        raise DataError(source, f"unknown class name {name!r}; known classes: {list(classes)}") from None
