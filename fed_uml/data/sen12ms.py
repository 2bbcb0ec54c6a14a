"""SEN12MS: Sentinel-1 / Sentinel-2 / MODIS land-cover triplets, native layout, as scene labels.

180,662 triplets of 256 x 256 px patches (10 m) from 252 regions of interest (ROIs) spread
over all continents and the four meteorological seasons (2017-2018).

Layout (under the data root's ``sen12ms/``; see `fed_uml.data.settings`)
    ``ROIs<nnnn>_<season>/<sensor>_<scene>/ROIs<nnnn>_<season>_<sensor>_<scene>_p<patch>.tif``
    with ``<sensor>`` one of
        ``s1``: 2 bands VV, VH, float32 backscatter sigma0 in dB;
        ``s2``: 13 bands B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12,
            uint16 L1C reflectance x 10000;
        ``lc``: 4 bands IGBP, LCCS land cover, LCCS land use, LCCS surface hydrology
            (MODIS MCD12Q1, 500 m, upsampled).
    Split lists ``train_list.txt`` and ``test_list.txt`` (one S2 file name per line; the
    classification splits of Schmitt & Wu 2021; ``test`` is the hold-out scenes) in
    ``sen12ms/`` or ``sen12ms/splits/``. No validation list is published.

Scene label: the simplified IGBP class (10 classes; Schmitt & Wu 2021) that covers most
pixels of the patch's IGBP land-cover band (the single-label rule of the SEN12MS
classification code: argmax of the class fractions). IGBP values outside 1..17 are no-data;
a patch without valid pixels is an error. Where an official single-label file is present,
``single-label_IGBPsimple_ClsNum.txt`` in ``sen12ms/`` or ``sen12ms/labels/``, its labels
are used instead and the land-cover patches are not read. Its format is taken to be one
patch per line, ``<patch file name> <class number 1..10>`` (comma, tab or space separated;
the name may be that of the s1, s2 or lc file). Reading the lc patches of the whole archive
is slow (about 90 GB); the label file avoids it.

Scene ids are ``ROIs<nnnn>_<season>_<scene>_p<patch>`` (shared by the s1, s2 and lc files).
Because neighbouring patches of one scene overlap by half, the unpaired split deals whole
scenes (``ROIs<nnnn>_<season>_<scene>``) to modalities, not single patches.

Citation
    M. Schmitt, L. H. Hughes, C. Qiu, X. X. Zhu. "SEN12MS - a curated dataset of
    georeferenced multi-spectral Sentinel-1/2 imagery for deep learning and data fusion."
    ISPRS Annals IV-2/W7, 153-160, 2019. M. Schmitt, Y.-L. Wu. "Remote sensing image
    classification with the SEN12MS dataset." ISPRS Annals V-2-2021, 101-106, 2021.
    Licence CC-BY-4.0.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from fed_uml.data.download import Resource
from fed_uml.data.errors import DataError
from fed_uml.data.raster import check_shape, read_tiff
from fed_uml.data.scenes import SceneDataset, SceneRecord, read_text_lines

CLASSES = (
    "Forest",
    "Shrubland",
    "Savanna",
    "Grassland",
    "Wetlands",
    "Croplands",
    "Urban/Built-up",
    "Snow/Ice",
    "Barren",
    "Water",
)
# IGBP class (1..17) -> simplified IGBP class index (0..9).
IGBP_TO_SIMPLE = {
    1: 0, 2: 0, 3: 0, 4: 0, 5: 0,  # evergreen/deciduous needleleaf/broadleaf, mixed forests
    6: 1, 7: 1,  # closed / open shrublands
    8: 2, 9: 2,  # woody savannas, savannas
    10: 3,  # grasslands
    11: 4,  # permanent wetlands
    12: 5, 14: 5,  # croplands, cropland/natural vegetation mosaics
    13: 6,  # urban and built-up lands
    15: 7,  # permanent snow and ice
    16: 8,  # barren
    17: 9,  # water bodies
}
S1_BANDS = ("VV", "VH")
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
LABEL_FILE = "single-label_IGBPsimple_ClsNum.txt"
_NAME = re.compile(r"^(ROIs\d+_[a-z]+)_(s1|s2|lc)_(\d+)_p(\d+)(\.tif)?$")

_DATASERV = "https://dataserv.ub.tum.de/s/m1474000/download?path=%2F&files="
_SPLITS = "https://raw.githubusercontent.com/schmitt-muc/SEN12MS/master/splits/"


def parse_name(name: str, source: str | Path) -> tuple[str, str, str, str]:
    """(season folder, sensor, scene number, patch number) of a SEN12MS file name."""
    m = _NAME.match(Path(name).name)
    if not m:
        raise DataError(
            source, f"{name!r} is not a SEN12MS file name (ROIs<n>_<season>_<s1|s2|lc>_<scene>_p<patch>.tif)"
        )
    return m.group(1), m.group(2), m.group(3), m.group(4)


def majority_class(igbp: np.ndarray, source: str | Path) -> int:
    """The simplified IGBP class covering most valid pixels (ties: the lower class index)."""
    values = igbp.astype(np.int64).ravel()
    lut = np.full(256, -1, dtype=np.int64)
    for k, v in IGBP_TO_SIMPLE.items():
        lut[k] = v
    valid = (values >= 0) & (values < 256)
    simple = lut[values[valid]]
    simple = simple[simple >= 0]
    if simple.size == 0:
        raise DataError(source, "no valid IGBP pixel (values 1..17) in the land-cover patch")
    return int(np.bincount(simple, minlength=len(CLASSES)).argmax())


@lru_cache(maxsize=None)
def _lc_label(path: str, mtime_ns: int) -> int:
    """Cached so that the s1 and s2 modalities do not both read every land-cover patch."""
    lc = check_shape(read_tiff(path, ("uint16",), "SEN12MS land cover (lc)"), path, bands=4)
    return majority_class(lc[0], path)


class SEN12MS(SceneDataset):
    """SEN12MS: sensors ``s1`` (VV, VH) and ``s2`` (13 bands); scene labels from the lc patches."""

    NAME = "SEN12MS"
    FOLDER = "sen12ms"
    CLASSES: ClassVar[tuple[str, ...]] = CLASSES
    SENSORS: ClassVar[dict[str, tuple[str, ...]]] = {"s1": S1_BANDS, "s2": S2_BANDS}
    # as shipped (and as torchgeo's SEN12MS reads them): s1 sigma0 in dB, s2 reflectance x 10000
    DTYPES: ClassVar[dict[str, tuple[str, ...]]] = {"s1": ("float32",), "s2": ("uint16",)}
    SPLITS = ("train", "test")
    NATIVE_SIZE = 256
    SEASONS: ClassVar[tuple[str, ...]] = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")
    # The archives and split lists as published (TUM mediaTUM / dataserv, GitHub); md5s as
    # listed by torchgeo's SEN12MS.
    RESOURCES = tuple(
        Resource(_DATASERV + f"{season}_{src}.tar.gz", f"{season}_{src}.tar.gz", md5=md5)
        for (season, src), md5 in {
            ("ROIs1158_spring", "lc"): "6e2e8fa8b8cba77ddab49fd20ff5c37b",
            ("ROIs1158_spring", "s1"): "fba019bb27a08c1db96b31f718c34d79",
            ("ROIs1158_spring", "s2"): "d58af2c15a16f376eb3308dc9b685af2",
            ("ROIs1868_summer", "lc"): "2c5bd80244440b6f9d54957c6b1f23d4",
            ("ROIs1868_summer", "s1"): "01044b7f58d33570c6b57fec28a3d449",
            ("ROIs1868_summer", "s2"): "4dbaf72ecb704a4794036fe691427ff3",
            ("ROIs1970_fall", "lc"): "9b126a68b0e3af260071b3139cb57cee",
            ("ROIs1970_fall", "s1"): "19132e0aab9d4d6862fd42e8e6760847",
            ("ROIs1970_fall", "s2"): "b8f117818878da86b5f5e06400eb1866",
            ("ROIs2017_winter", "lc"): "0fa0420ef7bcfe4387c7e6fe226dc728",
            ("ROIs2017_winter", "s1"): "bb8cbfc16b95a4f054a3d5380e0130ed",
            ("ROIs2017_winter", "s2"): "3807545661288dcca312c9c538537b63",
        }.items()
    ) + (
        Resource(_SPLITS + "train_list.txt", "train_list.txt", md5="0a68d4e1eb24f128fccdb930000b2546", extract=False),
        Resource(_SPLITS + "test_list.txt", "test_list.txt", md5="c7faad064001e646445c4c634169484d", extract=False),
    )

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        """Whether `path` holds SEN12MS's `ROIs*_*` folders."""
        return any(path.glob("ROIs*_*"))

    def _find(self, *names: str) -> Path | None:
        for name in names:
            for p in (self.root / name, self.root / "splits" / name, self.root / "labels" / name):
                if p.is_file():
                    return p
        return None

    def _label_file(self) -> dict[str, int] | None:
        path = self._find(LABEL_FILE)
        if path is None:
            return None
        labels = {}
        for i, line in enumerate(read_text_lines(path), 1):
            parts = [p for p in re.split(r"[,\s]+", line) if p]
            if len(parts) < 2:
                raise DataError(path, f"line {i}: expected '<patch file name> <class number>', got {line!r}")
            try:
                season, _, scene, patch = parse_name(parts[0], f"{path} line {i}")
                number = int(float(parts[-1]))
            except (DataError, ValueError):
                if i == 1:  # a header line
                    continue
                raise DataError(path, f"line {i}: cannot parse {line!r}") from None
            if not 1 <= number <= len(CLASSES):
                raise DataError(path, f"line {i}: class number {number} is outside 1..{len(CLASSES)}")
            labels[f"{season}_{scene}_p{patch}"] = number - 1
        self.label_source = str(path.name)
        return labels

    def _index(self, split: str) -> list[SceneRecord]:
        path = self.index_file = self._find(f"{split}_list.txt")
        if path is None:
            raise DataError(self.root / f"{split}_list.txt",
                            "split list not found (dataset.download=true fetches the official ones)")
        official = self._label_file()
        if official is None:
            self.label_source = "land-cover majority"
        records = []
        for i, line in enumerate(read_text_lines(path), 1):
            try:
                season, _, scene, patch = parse_name(line, f"{path} line {i}")
            except DataError as e:
                self._problem(e)
                continue
            sid = f"{season}_{scene}_p{patch}"
            files = {
                s: self.root / season / f"{s}_{scene}" / f"{season}_{s}_{scene}_p{patch}.tif"
                for s in ("s1", "s2", "lc")
            }
            try:
                if official is not None:
                    if sid not in official:
                        raise DataError(path, f"patch {sid} has no label in {LABEL_FILE}")
                    label = official[sid]
                else:
                    if not files["lc"].is_file():
                        raise DataError(files["lc"], "file not found")
                    label = _lc_label(str(files["lc"]), files["lc"].stat().st_mtime_ns)
            except DataError as e:
                self._problem(e)
                continue
            records.append(SceneRecord(scene=sid, label=label, split=split, group=f"{season}_{scene}", files=files))
        return records

    def _read(self, record: SceneRecord) -> np.ndarray:
        path = record.files[self.sensor]
        arr = self.read_tiff(path)
        return check_shape(arr, path, bands=len(self.SENSORS[self.sensor]), size=(arr.shape[1], arr.shape[1]))
