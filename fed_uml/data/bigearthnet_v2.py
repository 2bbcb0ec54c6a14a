"""BigEarthNet v2.0 (reBEN): the refined BigEarthNet, paired Sentinel-1 / Sentinel-2, native layout.

549,488 pairs of 1.2 km x 1.2 km patches (Sentinel-2 L2A processed with Sen2Cor 2.11),
labelled directly with the 19-class CORINE nomenclature, with new geographic splits.

Layout (under the data root's ``bigearthnet_v2/``; see `fed_uml.data.settings`)
    ``metadata.parquet``: one row per patch with (at least) ``patch_id`` (the S2 name),
        ``s1_name``, ``labels`` (a list of 19-class names) and ``split`` (``train``,
        ``validation`` or ``test``; ``val`` is accepted too).
    ``BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif ... _B12.tif, _B8A.tif``, where
        ``<tile>`` is the patch id without its last two ``_`` fields
        (``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP``): 12 bands, uint16 reflectance
        x 10000, each at its native size (120, 60 or 20 px) or already at 120 px, all
        resampled bilinearly onto the 120 x 120 grid and then to ``image_size``.
    ``BigEarthNet-S1/<s1 tile>/<s1_name>/<s1_name>_VV.tif, _VH.tif``, where ``<s1 tile>`` is
        the S1 name without its last three ``_`` fields: float32 dB, 120 x 120.

Scene ids are the S2 patch ids (for both sensors). The balanced single-label rule of
`fed_uml.data.splits` applies as for v1 (the labels are already 19-class); the sensors,
classes and band reading are v1's (`fed_uml.data.bigearthnet.BigEarthNetBase`). The archives are
.tar.zst: `dataset.download=true` needs the optional package ``zstandard`` to unpack them.

Citation
    K. N. Clasen, L. Hackel, T. Burgert, G. Sumbul, B. Demir, V. Markl. "reBEN: Refined
    BigEarthNet Dataset for Remote Sensing Image Analysis." IGARSS 2025 (arXiv:2407.03653).
    Licence CDLA-Permissive-1.0.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from fed_uml.data.bigearthnet import CLASSES_19, BigEarthNetBase
from fed_uml.data.download import Resource
from fed_uml.data.errors import DataError
from fed_uml.data.scenes import SceneRecord

_SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}


class BigEarthNetV2(BigEarthNetBase):
    """reBEN: sensors ``s1`` (VV, VH) and ``s2`` (12 bands), labels from metadata.parquet."""

    NAME = "BigEarthNet v2.0 (reBEN)"
    FOLDER = "bigearthnet_v2"
    STRICT_SIZES = False
    DIRS: ClassVar[dict[str, str]] = {"s1": "BigEarthNet-S1", "s2": "BigEarthNet-S2"}
    # Zenodo record 10891137; md5s as listed by torchgeo's BigEarthNetV2. The metadata file
    # has no published checksum there, so it is not checked.
    RESOURCES: ClassVar[tuple[Resource, ...]] = (
        Resource("https://zenodo.org/records/10891137/files/metadata.parquet", "metadata.parquet", extract=False),
        Resource("https://zenodo.org/records/10891137/files/BigEarthNet-S1.tar.zst", "BigEarthNet-S1.tar.zst",
                 md5="a55eaa2cdf6a917e296bd6601ec1e348"),
        Resource("https://zenodo.org/records/10891137/files/BigEarthNet-S2.tar.zst", "BigEarthNet-S2.tar.zst",
                 md5="2245ed2d1a93f6ce637d839bc856396e"),
    )

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        """Whether `path` holds the archive's metadata.parquet."""
        return (path / "metadata.parquet").is_file()

    def _metadata(self) -> dict[str, list[Any]]:
        path = self.root / "metadata.parquet"
        if not path.is_file():
            raise DataError(path, "metadata file not found (dataset.download=true fetches it)")
        st = path.stat()
        return _read_metadata(str(path), st.st_size, st.st_mtime_ns)

    def _index(self, split: str) -> list[SceneRecord]:
        sensor_dir = self._sensor_dir()
        meta = self._metadata()
        source = self.index_file = self.root / "metadata.parquet"
        wanted = _SPLIT_NAMES[split]
        records = []
        for pid, s1, labels, sp in zip(meta["patch_id"], meta["s1_name"], meta["labels"], meta["split"]):
            if sp not in wanted:
                continue
            try:
                idx = tuple(sorted({self._class(name, source, pid) for name in (labels or [])}))
            except DataError as e:
                self._problem(e)
                continue
            name = s1 if self.sensor == "s1" else pid
            cut = 3 if self.sensor == "s1" else 2
            tile = "_".join(name.split("_")[:-cut])
            records.append(SceneRecord(scene=pid, label=-1, split=split, labels=idx,
                                       files={"folder": sensor_dir / tile / name, "name": name, "s1": s1, "s2": pid}))
        return records

    @staticmethod
    def _class(name: str, source: Path, pid: str) -> int:
        if name not in CLASSES_19:
            raise DataError(source, f"patch {pid}: unknown label {name!r} (not one of the 19 classes)")
        return CLASSES_19.index(name)


@lru_cache(maxsize=1)
def _read_metadata(path: str, size: int, mtime_ns: int) -> dict[str, list[Any]]:
    """The parquet's columns, read once per process for every split and sensor.

    549,488 rows take seconds to read; indexing reads them for 3 splits x 2 sensors.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["patch_id", "s1_name", "labels", "split"])
    except Exception as e:
        raise DataError(path, f"cannot read patch_id, s1_name, labels, split: {e}") from e
    return table.to_pydict()
