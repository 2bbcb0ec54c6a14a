"""reBEN (BigEarthNet v2.0) as its maintainers ship it for training.

One LMDB environment of safetensors patches (written by rico-hdl) beside `metadata.parquet`.

Layout (under the data root's ``bigearthnet_v2/``, as for the native reBEN reader)
    ``metadata.parquet``: as `fed_uml.data.bigearthnet_v2` (patch_id, s1_name, labels, split).
    an LMDB environment: the folder itself or its first subfolder (sorted) holding ``data.mdb``.
        Keys are ASCII patch names, the S2 ``patch_id`` and the S1 ``s1_name``, in one
        environment; each value is a safetensors blob, {band name: 2-D array}: S2 entries 12
        bands of uint16 reflectance x 10000 at their native size (120, 60 or 20 px), S1 entries
        VV and VH, float32 dB, 120 px.

Each band is checked and resampled exactly as a band file of the native layout is
(`BigEarthNetBandReader._fit_band`), so both layouts give the same patch. Labels, splits and
the scene ids are the parquet's, read by the native reader's indexing (once per process).

Why lmdb and safetensors: they are how the format is written; the environment is opened
read-only without locking (many processes read it at once) and without read-ahead (patches are
read in random order).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fed_uml.data.bigearthnet_v2 import BigEarthNetV2
from fed_uml.data.download import Resource
from fed_uml.data.errors import DataError
from fed_uml.data.raster import check_finite
from fed_uml.data.scenes import SceneRecord


def find_environment(folder: Path) -> Path | None:
    """The LMDB environment in `folder`: the folder itself or its first subfolder with data.mdb."""
    if (folder / "data.mdb").is_file():
        return folder
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if (sub / "data.mdb").is_file():
                return sub
    return None


# An environment is reopened after this many reads: LMDB maps its file, and every page a read
# touches stays in the process's resident memory until the map is closed, so a pass over the
# whole archive would otherwise end with the archive (14 GiB at 50,000 pairs) counted in the
# resident memory of every process that read it.
READS_PER_OPEN = 512
_OPEN: dict[str, list[Any]] = {}  # path -> [environment, reads, pid]


def _environment(path: str) -> Any:  # an lmdb.Environment
    """One read-only handle per environment and process, reopened every `READS_PER_OPEN` reads.

    LMDB allows one; a forked or spawned worker opens its own.
    """
    import lmdb

    entry = _OPEN.get(path)
    if entry is not None and (entry[2] != os.getpid() or entry[1] >= READS_PER_OPEN):
        if entry[2] == os.getpid():
            entry[0].close()
        entry = None
    if entry is None:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=1024, subdir=True)
        entry = _OPEN[path] = [env, 0, os.getpid()]
    entry[1] += 1
    return entry[0]


class BigEarthNetV2LMDB(BigEarthNetV2):
    """reBEN from its LMDB environment: sensors ``s1`` (VV, VH) and ``s2`` (12 bands)."""

    NAME = "BigEarthNet v2.0 (reBEN, LMDB)"
    # the LMDB form is made from the archive by rico-hdl; nothing to download
    RESOURCES: ClassVar[tuple[Resource, ...]] = ()

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        """Whether `path` holds metadata.parquet and an LMDB environment."""
        return (path / "metadata.parquet").is_file() and find_environment(path) is not None

    def _sensor_dir(self) -> Path:
        env = find_environment(self.root)
        if env is None:
            raise DataError(self.root, "no LMDB environment (a folder holding data.mdb, as rico-hdl writes) found "
                                       "here or in a subfolder")
        return env

    def _index(self, split: str) -> list[SceneRecord]:
        env = self._sensor_dir()
        return [replace(r, files={"env": env, "key": r.files["name"], "s1": r.files["s1"], "s2": r.files["s2"]})
                for r in super()._index(split)]

    def _patch(self, record: SceneRecord) -> tuple[dict[str, np.ndarray], str]:
        from safetensors.numpy import load

        env_path, key = record.files["env"], record.files["key"]
        source = f"{env_path}[{key}]"
        with _environment(str(env_path)).begin(buffers=False) as txn:
            blob = txn.get(key.encode())
        if blob is None:
            raise DataError(source, "patch not found in the LMDB environment")
        try:
            return load(blob), source
        except Exception as e:  # safetensors raises SafetensorError, ValueError, ...
            raise DataError(source, f"cannot decode the safetensors value (corrupt?): {e}") from e

    def _bands(self, record: SceneRecord, bands: tuple[str, ...], size: int) -> np.ndarray:
        arrays, source = self._patch(record)
        out = []
        for b in bands:
            if b not in arrays:
                raise DataError(source, f"band {b} missing (the value holds {sorted(arrays)})")
            arr = arrays[b]
            if arr.ndim != 2 or arr.dtype.kind not in "iuf":
                raise DataError(source, f"band {b}: expected a 2-D numeric array, got {arr.dtype} {arr.shape}")
            band = check_finite(np.ascontiguousarray(arr, dtype=np.float32)[None], source)
            out.append(self._fit_band(band, source, b, size))
        return np.stack(out)

    def load(self, record: SceneRecord) -> np.ndarray:
        """The scene's selected bands, resized to the image size, from the LMDB environment."""
        return self._bands(record, self.bands, self.image_size or self.NATIVE_SIZE)

    def _read(self, record: SceneRecord) -> np.ndarray:
        return self._bands(record, self.SENSORS[self.sensor], self.NATIVE_SIZE)
