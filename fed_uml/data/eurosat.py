"""EuroSAT (Sentinel-2): the 13-band MS GeoTIFFs and the RGB JPEGs, in their native layouts.

EuroSAT: 27,000 labelled 64 x 64 px Sentinel-2 L1C patches (10 m pixels) over 34 European
countries, 10 land-use / land-cover classes, 2,000 to 3,000 patches per class.

Layout (under the data root; see `fed_uml.data.settings` for the root convention)
    ``eurosat_ms/``  EuroSAT MS (`EuroSAT`):
        ``<Class>/<Class>_<n>.tif``: 13 bands, uint16, 64 x 64, L1C top-of-atmosphere
        reflectance x 10000 (digital numbers), pixel-interleaved. The class folders may also
        sit where the official zip puts them,
        ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/`` or ``EuroSAT_MS/``.
        Band order in the file: B01, B02, B03, B04, B05, B06, B07, B08, B09, B10, B11, B12,
        B8A (torchgeo's ``EuroSAT.all_band_names``).
    ``eurosat_rgb/``  EuroSAT RGB (`EuroSATRGB`):
        ``2750/<Class>/<Class>_<n>.jpg``: 8-bit RGB JPEGs of the same patches (display-scaled
        digital numbers, not reflectances). Bands are named after their sources B04, B03, B02.
    Split files ``eurosat-train.txt``, ``eurosat-val.txt``, ``eurosat-test.txt`` (one file
    name per line; the official ones, from Neumann et al. 2019, list ``.jpg`` names and
    are matched by stem, so they serve the MS, RGB and SAR versions alike) sit in the data
    set's folder. Split files that list a tile in two splits are refused
    (`fed_uml.data.scenes.check_disjoint_splits`); so is an MS GeoTIFF that is not uint16.

Scene ids are the file stems (``AnnualCrop_1``): the MS, RGB and SAR (EuroSAT-SAR, see
`fed_uml.data.eurosat_sar`) versions of one patch share it, which is what the unpaired
protocol keeps apart.

Citation
    P. Helber, B. Bischke, A. Dengel, D. Borth. "EuroSAT: A Novel Dataset and Deep Learning
    Benchmark for Land Use and Land Cover Classification." IEEE JSTARS 12(7), 2019.
    https://doi.org/10.1109/JSTARS.2019.2918242 (licence: MIT).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from fed_uml.data.download import Resource
from fed_uml.data.errors import DataError
from fed_uml.data.raster import check_shape, read_jpeg, tiff_band_count
from fed_uml.data.scenes import SceneDataset, SceneRecord, class_of, read_text_lines

CLASSES = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
MS_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
RGB_BANDS = ("B04", "B03", "B02")

# torchgeo's mirror of the official files (the original madm.dfki.de host is often down).
_HF = "https://hf.co/datasets/torchgeo/eurosat/resolve/1ce6f1bfb56db63fd91b6ecc466ea67f2509774c/"
SPLIT_RESOURCES = (
    Resource(_HF + "eurosat-train.txt", "eurosat-train.txt", md5="908f142e73d6acdf3f482c5e80d851b1", extract=False),
    Resource(_HF + "eurosat-val.txt", "eurosat-val.txt", md5="95de90f2aa998f70a3b2416bfe0687b4", extract=False),
    Resource(_HF + "eurosat-test.txt", "eurosat-test.txt", md5="7ae5ab94471417b6e315763121e67c5f", extract=False),
)


class EuroSATBase(SceneDataset):
    """The EuroSAT folder-per-class layout shared by the MS, RGB and SAR versions."""

    CLASSES: ClassVar[tuple[str, ...]] = CLASSES
    NATIVE_SIZE: ClassVar[int] = 64
    EXTENSION: ClassVar[str] = ".tif"
    # Where the class folders may sit inside the data set's folder, first match wins.
    IMAGE_DIRS: ClassVar[tuple[str, ...]] = ("",)
    # Other data set folders (under the data root) whose split files serve this one too.
    SPLIT_FALLBACK_FOLDERS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _image_dir(cls, folder: Path) -> Path | None:
        for sub in cls.IMAGE_DIRS:
            d = folder / sub if sub else folder
            if any((d / c).is_dir() for c in CLASSES):
                return d
        return None

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        """Class folders holding files of this version (MS and SAR tifs differ in band count)."""
        d = cls._image_dir(path)
        if d is None:
            return False
        for c in CLASSES:
            for f in sorted((d / c).glob("*" + cls.EXTENSION)) if (d / c).is_dir() else ():
                return cls._is_own_file(f)
        return False

    @classmethod
    def _is_own_file(cls, path: Path) -> bool:
        """MS and SAR tiles share the .tif extension and the class names: the band count tells them apart."""
        if cls.EXTENSION != ".tif":
            return True
        (bands,) = cls.SENSORS.values()
        return tiff_band_count(path) == len(bands)

    def split_file(self, split: str) -> Path:
        """The split file `eurosat-<split>.txt`, in the root or a fallback folder beside it."""
        name = f"eurosat-{split}.txt"
        candidates = [self.root / name] + [self.root.parent / f / name for f in self.SPLIT_FALLBACK_FOLDERS]
        for c in candidates:
            if c.is_file():
                return c
        raise DataError(
            candidates[0],
            f"split file not found (also looked in {[str(c.parent) for c in candidates[1:]]}); "
            f"the {self.NAME} folder needs {name} (dataset.download=true fetches the official ones)",
        )

    def _index(self, split: str) -> list[SceneRecord]:
        image_dir = self._image_dir(self.root)
        if image_dir is None:
            raise DataError(self.root, f"no class folder ({', '.join(CLASSES)}) found for {self.NAME}")
        self.image_dir = image_dir
        path = self.index_file = self.split_file(split)
        records, seen = [], set()
        for line in read_text_lines(path):
            if Path(line).name != line or line in (".", ".."):
                self._problem(DataError(path, f"line {line!r}: expected a file name such as 'Forest_1.jpg', "
                                              "not a path"))
                continue
            stem = Path(line).stem
            if stem in seen:
                self._problem(DataError(path, f"{line!r} is listed twice"))
                continue
            seen.add(stem)
            cls_name = stem.rsplit("_", 1)[0]
            try:
                label = class_of(cls_name, CLASSES, f"{path} (line {line!r})")
            except DataError as e:
                self._problem(e)
                continue
            file = image_dir / cls_name / (stem + self.EXTENSION)
            records.append(SceneRecord(scene=stem, label=label, split=split, files={"image": file}))
        return records

    def _decode(self, path: Path) -> np.ndarray:
        """One file as float32 (C, H, W): a GeoTIFF (MS, SAR) in the pixel type the version ships."""
        return self.read_tiff(path)

    def _read(self, record: SceneRecord) -> np.ndarray:
        """One file: all of the version's bands, checked for band count and the 64 x 64 size."""
        path = record.files["image"]
        size = (self.NATIVE_SIZE, self.NATIVE_SIZE)
        return check_shape(self._decode(path), path, bands=len(self.SENSORS[self.sensor]), size=size)


class EuroSAT(EuroSATBase):
    """EuroSAT MS: all 13 Sentinel-2 bands (sensor ``ms``), any subset selectable."""

    NAME = "EuroSAT MS"
    FOLDER = "eurosat_ms"
    SENSORS: ClassVar[dict[str, tuple[str, ...]]] = {"ms": MS_BANDS}
    DTYPES: ClassVar[dict[str, tuple[str, ...]]] = {"ms": ("uint16",)}  # digital numbers, as shipped
    IMAGE_DIRS = ("", "ds/images/remote_sensing/otherDatasets/sentinel_2/tif", "EuroSAT_MS", "EuroSATallBands")
    SPLIT_FALLBACK_FOLDERS = ("eurosat_rgb", "eurosat_sar")
    RESOURCES = (
        Resource(_HF + "EuroSATallBands.zip", "EuroSATallBands.zip", md5="5ac12b3b2557aa56e1826e981e8e200e"),
        *SPLIT_RESOURCES,
    )


class EuroSATRGB(EuroSATBase):
    """EuroSAT RGB: the 8-bit JPEG version (sensor ``rgb``, bands B04, B03, B02)."""

    NAME = "EuroSAT RGB"
    FOLDER = "eurosat_rgb"
    SENSORS: ClassVar[dict[str, tuple[str, ...]]] = {"rgb": RGB_BANDS}
    EXTENSION = ".jpg"
    IMAGE_DIRS = ("2750", "EuroSAT_RGB", "")
    SPLIT_FALLBACK_FOLDERS = ("eurosat_ms", "eurosat_sar")
    RESOURCES = (
        Resource(
            "https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
            "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
            "EuroSAT.zip",
            md5="c8fa014336c82ac7804f0398fcb19387",
        ),
        *SPLIT_RESOURCES,
    )

    def _decode(self, path: Path) -> np.ndarray:
        return read_jpeg(path)
