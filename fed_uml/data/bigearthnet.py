"""BigEarthNet v1.0 / BigEarthNet-MM: paired Sentinel-1 and Sentinel-2 patches, native layout.

590,326 pairs of 1.2 km x 1.2 km patches from 125 Sentinel-2 tiles over 10 European
countries (June 2017 to May 2018), multi-labelled with CORINE Land Cover 2018 classes.

Layout (under the data root's ``bigearthnet_v1/``; see `fed_uml.data.settings`)
    ``BigEarthNet-v1.0/<S2 name>/<S2 name>_B01.tif ... _B12.tif, _B8A.tif``: 12 Sentinel-2
        L2A bands (no B10), one uint16 file per band, bottom-of-atmosphere reflectance
        x 10000, at their native resolution: 120 x 120 px (10 m: B02, B03, B04, B08),
        60 x 60 (20 m: B05, B06, B07, B8A, B11, B12), 20 x 20 (60 m: B01, B09). Every band
        is resampled bilinearly onto the 10 m grid (120 x 120, as torchgeo does), then to
        ``image_size``. ``<S2 name>_labels_metadata.json`` holds ``labels``: 43-class names.
    ``BigEarthNet-S1-v1.0/<S1 name>/<S1 name>_VV.tif, _VH.tif``: float32 backscatter in dB,
        120 x 120; ``<S1 name>_labels_metadata.json`` holds the same ``labels``.
    ``bigearthnet-train.csv``, ``bigearthnet-val.csv``, ``bigearthnet-test.csv``: rows
        ``<S2 name>,<S1 name>``, no header (the official BigEarthNet-MM splits).
    Sentinel-2 band order here: B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12.

Labels: the 43 CORINE names are mapped to the 19-class nomenclature of Sumbul et al.
(2021) with the standard mapping (torchgeo's ``BigEarthNet.label_converter``); names
without a 19-class counterpart are dropped. Each sensor reads the json in its own folder.
Scene ids are the S2 patch names, for the S1 patches too, so a pair shares one id. The
balanced single-label rule is in `fed_uml.data.splits`. What v1 and v2 share (the sensors,
the 19 classes, reading one file per band) is `BigEarthNetBase`, here.

Citation
    G. Sumbul, A. de Wall, T. Kreuziger, F. Marcelino, H. Costa, P. Benevides, M. Caetano,
    B. Demir, V. Markl. "BigEarthNet-MM: A Large Scale Multi-Modal Multi-Label Benchmark
    Archive for Remote Sensing Image Classification and Retrieval." IEEE GRSM 9(3), 2021.
    G. Sumbul, M. Charfuelan, B. Demir, V. Markl. "BigEarthNet: A Large-Scale Benchmark
    Archive for Remote Sensing Image Understanding." IGARSS 2019. Licence CDLA-Permissive-1.0.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from fed_uml.data.download import Resource
from fed_uml.data.errors import DataError
from fed_uml.data.raster import read_tiff, resample
from fed_uml.data.scenes import SceneDataset, SceneRecord

CLASSES_43 = (
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
)

CLASSES_19 = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

# 43-class name -> 19-class name (absent: no 19-class counterpart, the label is dropped).
LABEL_43_TO_19 = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Pastures": "Pastures",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation":
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1_BANDS = ("VV", "VH")
# The pixel type each band file is shipped in (v1 and v2 alike): S2 reflectance x 10000 as
# uint16, S1 backscatter in dB as float32.
BAND_DTYPE = {**{b: "uint16" for b in S2_BANDS}, **{b: "float32" for b in S1_BANDS}}
# Native size (px) of each band file: 10 m bands 120, 20 m bands 60, 60 m bands 20.
BAND_SIZE = {
    "B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60, "B07": 60,
    "B08": 120, "B8A": 60, "B09": 20, "B11": 60, "B12": 60, "VV": 120, "VH": 120,
}

_SPLITS_URL = (
    "https://git.tu-berlin.de/rsim/BigEarthNet-MM_19-classes_models/-/raw/"
    "9a5be07346ab0884b2d9517475c27ef9db9b5104/splits/{}.csv?inline=false"
)


def labels_19(names: list[str], source: str | Path) -> tuple[int, ...]:
    """Sorted 19-class indices of a list of 43-class names; an unknown name is a DataError."""
    out = set()
    for name in names:
        if name not in CLASSES_43:
            raise DataError(source, f"unknown BigEarthNet label {name!r} (not one of the 43 CORINE classes)")
        if name in LABEL_43_TO_19:
            out.add(CLASSES_19.index(LABEL_43_TO_19[name]))
    return tuple(sorted(out))


class BigEarthNetBandReader:
    """Reading BigEarthNet's one-file-per-band patches (v1, v2 and `fed_uml.predict`'s band folders).

    Each band file is checked (the pixel type BigEarthNet ships it in, one band, its native
    size, or 120 px where `STRICT_SIZES` is off, as v2 allows) and resampled straight from
    its native size to the requested grid. A patch is 120 x 120 px on the 10 m grid
    (`NATIVE_SIZE`), whatever the sizes of its band files.
    """

    STRICT_SIZES: ClassVar[bool] = True
    NATIVE_SIZE: ClassVar[int] = 120

    def _read_band(self, path: Path, band: str, size: int) -> np.ndarray:
        sensor = "S1" if band in S1_BANDS else "S2"
        arr = read_tiff(path, (BAND_DTYPE[band],), f"BigEarthNet {sensor} band {band}")
        return self._fit_band(arr, path, band, size)

    def _fit_band(self, arr: np.ndarray, path: str | Path, band: str, size: int) -> np.ndarray:
        """One band (1, H, W) as decoded from `path`, checked and resampled to size x size."""
        native = BAND_SIZE[band]
        if arr.shape[0] != 1:
            raise DataError(path, f"expected 1 band, found {arr.shape[0]}")
        allowed = {(native, native)} if self.STRICT_SIZES else {(native, native), (120, 120)}
        if tuple(arr.shape[1:]) not in allowed:
            raise DataError(
                path, f"band {band} should be {native} x {native} pixels, found {arr.shape[1]} x {arr.shape[2]}"
            )
        return resample(arr, size)[0]

    def _read_patch(self, folder: Path, name: str, bands: tuple[str, ...], size: int) -> np.ndarray:
        if not folder.is_dir():
            raise DataError(folder, "patch folder not found")
        return np.stack([self._read_band(folder / f"{name}_{b}.tif", b, size) for b in bands])


class BigEarthNetBase(BigEarthNetBandReader, SceneDataset):
    """What BigEarthNet v1 and v2 share.

    Sensors ``s1`` (VV, VH) and ``s2`` (12 bands) in one folder per sensor (`DIRS`), one file per
    band, 19 classes, several labels per patch.
    """

    NATIVE_SIZE: ClassVar[int] = BigEarthNetBandReader.NATIVE_SIZE  # the reader's, over SceneDataset's "unknown"
    CLASSES: ClassVar[tuple[str, ...]] = CLASSES_19
    SENSORS: ClassVar[dict[str, tuple[str, ...]]] = {"s1": S1_BANDS, "s2": S2_BANDS}
    MULTI_LABEL = True
    DIRS: ClassVar[dict[str, str]] = {}

    def _sensor_dir(self) -> Path:
        sensor_dir = self.root / self.DIRS[self.sensor]
        if not sensor_dir.is_dir():
            raise DataError(sensor_dir, f"{self.NAME} {self.sensor.upper()} folder not found")
        return sensor_dir

    def load(self, record: SceneRecord) -> np.ndarray:
        """The selected bands, each resampled once, from its native size to `image_size`."""
        size = self.image_size or self.NATIVE_SIZE
        arr = self._read_patch(record.files["folder"], record.files["name"], self.bands, size)
        self.sizes_read.add((self.NATIVE_SIZE, self.NATIVE_SIZE))
        return arr

    def _read(self, record: SceneRecord) -> np.ndarray:
        return self._read_patch(record.files["folder"], record.files["name"], self.SENSORS[self.sensor],
                                self.NATIVE_SIZE)


class BigEarthNet(BigEarthNetBase):
    """BigEarthNet v1.0 (S2) and BigEarthNet-S1 v1.0: sensors ``s1`` (VV, VH) and ``s2`` (12 bands)."""

    NAME = "BigEarthNet v1.0"
    FOLDER = "bigearthnet_v1"
    DIRS: ClassVar[dict[str, str]] = {"s1": "BigEarthNet-S1-v1.0", "s2": "BigEarthNet-v1.0"}
    RESOURCES = (
        Resource("https://zenodo.org/records/12687186/files/BigEarthNet-S1-v1.0.tar.gz", "BigEarthNet-S1-v1.0.tar.gz",
                 md5="94ced73440dea8c7b9645ee738c5a172"),
        Resource("https://zenodo.org/records/12687186/files/BigEarthNet-S2-v1.0.tar.gz", "BigEarthNet-S2-v1.0.tar.gz",
                 md5="5a64e9ce38deb036a435a7b59494924c"),
        Resource(_SPLITS_URL.format("train"), "bigearthnet-train.csv", md5="623e501b38ab7b12fe44f0083c00986d",
                 extract=False),
        Resource(_SPLITS_URL.format("val"), "bigearthnet-val.csv", md5="22efe8ed9cbd71fa10742ff7df2b7978",
                 extract=False),
        Resource(_SPLITS_URL.format("test"), "bigearthnet-test.csv", md5="697fb90677e30571b9ac7699b7e5b432",
                 extract=False),
    )

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        """Whether `path` holds one of the archive's sensor folders."""
        return any((path / d).is_dir() for d in cls.DIRS.values())

    def _index(self, split: str) -> list[SceneRecord]:
        sensor_dir = self._sensor_dir()
        path = self.index_file = self.root / f"bigearthnet-{split}.csv"
        if not path.is_file():
            raise DataError(path, "split file not found (dataset.download=true fetches the official ones)")
        records = []
        with open(path, newline="") as f:
            for i, row in enumerate(csv.reader(f), 1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    self._problem(DataError(path, f"line {i}: expected '<S2 name>,<S1 name>', got {row}"))
                    continue
                s2, s1 = row[0].strip(), row[1].strip()
                if any(Path(n).name != n or n in (".", "..") for n in (s2, s1)):
                    self._problem(DataError(path, f"line {i}: patch names must be plain folder names, got {row}"))
                    continue
                name = s1 if self.sensor == "s1" else s2
                folder = sensor_dir / name
                meta = folder / f"{name}_labels_metadata.json"
                try:
                    labels = self._labels(meta)
                except DataError as e:
                    self._problem(e)
                    continue
                records.append(SceneRecord(scene=s2, label=-1, split=split, labels=labels,
                                           files={"folder": folder, "name": name, "s1": s1, "s2": s2}))
        return records

    @staticmethod
    def _labels(meta: Path) -> tuple[int, ...]:
        if not meta.is_file():
            raise DataError(meta, "label file not found")
        try:
            names = json.loads(meta.read_text())["labels"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(meta, f"cannot read the 'labels' field: {e}") from e
        if not isinstance(names, list):
            raise DataError(meta, f"'labels' must be a list, got {type(names).__name__}")
        return labels_19(names, meta)
