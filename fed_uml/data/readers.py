"""Shared I/O for the real data sets: errors, raster reading, resampling, the base dataset class.

Why a common layer: every reader (EuroSAT, EuroSAT-SAR, BigEarthNet v1/v2, SEN12MS) must
fail the same way on bad input (a clear message that names the file), find its folder
under the data root the same way, and hand back samples in the same form:
``{"image": float32 tensor (C, H, W) in physical units, "label": int, "scene": str}``.
Normalisation is *not* done here (see `fed_uml.data.normalize`): readers only read.

Data root convention
    The data root is the setting ``dataset.root``, else the environment variable
    ``FED_UML_DATA``. It is the *parent* folder that holds one subfolder per data set
    (``eurosat_ms/``, ``eurosat_rgb/``, ``eurosat_sar/``, ``bigearthnet_v1/``,
    ``bigearthnet_v2/``, ``sen12ms/``); each data set class names its subfolder in
    ``FOLDER`` and ``dataset.folders`` can rename it. For convenience the root may also
    point at a data set's own folder: when ``<root>/<FOLDER>`` does not exist but the root
    itself has the data set's layout, the root is used as is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

ROOT_SETTING = "dataset.root (or the environment variable FED_UML_DATA)"
# A raster declaring more than this is refused from its header alone, before any pixel is
# decoded: far above any supported patch (SEN12MS, 13 x 256 x 256 float32, is 3.4 MB), so a
# corrupt or hostile header (a sparse or deflate-bomb TIFF of a few bytes) cannot exhaust memory.
MAX_RASTER_BYTES = 256 << 20


class DatasetNotFoundError(FileNotFoundError):
    """The data set is not where the settings say; the message names the path and the setting."""


class DataError(ValueError):
    """One input file (or one line of an index file) is bad; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


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
    files: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def unit(self) -> str:
        return self.group or self.scene


# ----------------------------------------------------------------------------- rasters


def read_tiff(path: str | Path) -> np.ndarray:
    """A TIFF as a float32 (C, H, W) array; any read problem becomes a DataError naming the file.

    tifffile reports pixel-interleaved files (EuroSAT) as (H, W, C) with axes ending in 'S'
    and band-sequential ones as (C, H, W); both come back as (C, H, W).
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, declared = series.axes, series.size
            nbytes = declared * series.dtype.itemsize
            if nbytes > MAX_RASTER_BYTES:
                raise DataError(path, f"declares a raster of shape {series.shape} ({series.dtype}, "
                                      f"{nbytes / 2**20:.0f} MiB), too large for one patch "
                                      f"(limit {MAX_RASTER_BYTES >> 20} MiB)")
            if any(not n for page in series.pages if page is not None for n in page.databytecounts):
                raise DataError(path, "has no data for some of its strips or tiles (sparse or truncated TIFF)")
            arr = series.asarray()
    except DataError:
        raise
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error, ...
        raise DataError(path, f"cannot read TIFF (corrupt or truncated?): {e}") from e
    if arr.size == 0 or arr.size != declared:
        raise DataError(path, f"decoded {arr.size} of the {declared} samples its header declares "
                              f"(unsupported pixel type {arr.dtype}?)")
    if arr.dtype.kind not in "biuf":
        raise DataError(path, f"unsupported pixel type {arr.dtype} (expected integer, float or bool samples)")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and axes.endswith("S"):
        arr = np.moveaxis(arr, -1, 0)
    elif arr.ndim != 3:
        raise DataError(path, f"expected a 2-D or 3-D raster, got shape {arr.shape} (axes {axes})")
    return check_finite(np.ascontiguousarray(arr, dtype=np.float32), path)


def tiff_band_count(path: str | Path) -> int | None:
    """The number of bands of a TIFF from its header alone (None if unreadable)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = series.shape, series.axes
    except Exception:
        return None
    if len(shape) == 2:
        return 1
    return shape[-1] if axes.endswith("S") else shape[0]


def read_jpeg(path: str | Path) -> np.ndarray:
    """An RGB image as a float32 (3, H, W) array of 8-bit digital numbers."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    except Exception as e:
        raise DataError(path, f"cannot read image (corrupt or truncated?): {e}") from e
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def check_finite(arr: np.ndarray, path: str | Path) -> np.ndarray:
    """Refuse NaN and inf: one such pixel poisons the band statistics of the whole modality."""
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(path, f"{bad} pixel(s) are NaN or infinite")
    return arr


def check_shape(arr: np.ndarray, path: str | Path, bands: int | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """Refuse a raster of the wrong band count or size before it reaches np.stack, naming the file."""
    if bands is not None and arr.shape[0] != bands:
        raise DataError(path, f"expected {bands} band(s), found {arr.shape[0]}")
    if size is not None and tuple(arr.shape[1:]) != tuple(size):
        raise DataError(path, f"expected {size[0]} x {size[1]} pixels, found {arr.shape[1]} x {arr.shape[2]}")
    return arr


def resample(arr: np.ndarray, size: int | None) -> np.ndarray:
    """Bilinear resampling of a (C, H, W) array to size x size (antialiased when shrinking).

    Used to bring bands of different ground resolution onto one grid (BigEarthNet's 20 m and
    60 m bands onto the 10 m grid, as torchgeo does) and every modality to `image_size`.
    """
    if size is None or arr.shape[1:] == (size, size):
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
    down = size < arr.shape[1] or size < arr.shape[2]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=down)
    return out[0].numpy()


def read_text_lines(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a text index file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(path, f"cannot read: {e}") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------- base class


class SceneDataset(Dataset):
    """Base class of the real-data readers (torchgeo style: one subclass per data set).

    A subclass declares its metadata as class constants and implements `_index` (the scene
    records of a split, from the native index files) and `_read` (the pixels of one record
    for one sensor). Samples are dicts {"image": float32 (C, H, W) in physical units,
    "label": int, "scene": str}.
    """

    NAME: ClassVar[str] = ""
    FOLDER: ClassVar[str] = ""
    CLASSES: ClassVar[tuple[str, ...]] = ()
    SENSORS: ClassVar[dict[str, tuple[str, ...]]] = {}
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    NATIVE_SIZE: ClassVar[int | None] = None
    RESOURCES: ClassVar[tuple] = ()  # fed_uml.data.download.Resource entries

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
        self.records: list[SceneRecord] = self._index(split)

    # -- metadata -------------------------------------------------------------------
    @classmethod
    def check_bands(cls, sensor: str, bands: Sequence[str] | None) -> tuple[str, ...]:
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
        from fed_uml.data.download import fetch_resources

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

    def load(self, record: SceneRecord) -> np.ndarray:
        """The selected bands of one record at `image_size`, checked for NaN/inf."""
        arr = self._read(record)
        arr = arr[self.band_index]
        return resample(arr, self.image_size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        return {"image": torch.from_numpy(np.ascontiguousarray(self.load(r))), "label": r.label, "scene": r.scene}


def class_of(name: str, classes: Sequence[str], source: str | Path) -> int:
    """The index of a class name; an unknown name is an error that names where it came from."""
    try:
        return tuple(classes).index(name)
    except ValueError:
        raise DataError(source, f"unknown class name {name!r}; known classes: {list(classes)}") from None


def as_mapping(value: object) -> Mapping:
    """A mapping setting that may be null in the yaml."""
    return value if isinstance(value, Mapping) else {}
