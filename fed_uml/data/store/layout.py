"""The on-disk format of a prepared store: its files, the stored dtype, the manifest, checksums.

A store is one folder per (data set, modality, settings digest) under the store root:

    images.npy      (N, C, H, W) patches at `image_size`, C-ordered, in the stored dtype: a
                    plain .npy (`np.load(path, mmap_mode="r")` maps it), one row per indexed
                    patch of every official split, in index order; a bad file's row is zeros
    rowstats.npy    (N, C, 2) float64: per row and band the mean and the sum of squared
                    deviations (M2) of the STORED values, so that the band statistics of any
                    subset (a training set, an institution's share) combine exactly without
                    reading a pixel (`combine_row_stats`)
    progress.jsonl  one line per block whose rows are written and synced (resuming reads it)
    manifest.json   written last, atomically: format version, settings, shape, dtype, the
                    SHA-256 of every block (images and rowstats bytes of its rows), the bad
                    rows with their errors, the training split's band statistics and the
                    files' size and mtime when complete. Its presence marks a complete store.

Stored dtype (`dataset.store.dtype=compact`, `stored_dtype`): sensors that record integer
digital numbers (Sentinel-2 reflectance x 10000 as uint16, EuroSAT RGB as 8-bit) keep their
integer type, rounded to the nearest integer after resampling (an error of at most 0.5 DN,
0.00005 reflectance, against a sensor noise of 10 DN and more); backscatter in dB is
float16 (11 significant bits: an error of at most 0.008 dB below |32| dB, against a
radiometric accuracy of 1 dB and speckle of several dB). `float32` stores the readers' values
exactly, so a streamed run equals the in-memory one bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
IMAGES, ROWSTATS, PROGRESS, MANIFEST = "images.npy", "rowstats.npy", "progress.jsonl", "manifest.json"
# Sensors whose files hold integer digital numbers, and their integer type; any other sensor
# (backscatter in dB) is stored as float16 in the compact form.
INTEGER_SENSORS = {"s2": np.uint16, "ms": np.uint16, "rgb": np.uint8}
BLOCK_BYTES = 32 << 20  # rows per block: about this many bytes of images (bounded memory per worker)


def stored_dtype(sensor: str, choice: str) -> np.dtype:
    """The dtype a sensor's patches are stored in (module docstring)."""
    if choice == "float32":
        return np.dtype(np.float32)
    return np.dtype(INTEGER_SENSORS.get(sensor, np.float16))


def to_stored(images: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """`images` (float32) in the stored dtype.

    Returns the array and how many values had to be clipped to its range (0 for any real patch:
    resampling never leaves the input's range).
    """
    if dtype == np.float32:
        return images.astype(np.float32, copy=False), 0
    if dtype.kind == "u":
        info: np.iinfo | np.finfo = np.iinfo(dtype)
        rounded = np.rint(images)
    else:
        info = np.finfo(dtype)
        rounded = images
    clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
    return np.clip(rounded, info.min, info.max).astype(dtype), clipped


def row_stats(stored: np.ndarray) -> np.ndarray:
    """(k, C, 2) float64: each row's per-band mean and M2 of the stored values (k, C, H, W)."""
    x = stored.reshape(stored.shape[0], stored.shape[1], -1).astype(np.float64)
    mean = x.mean(axis=2)
    m2 = ((x - mean[..., None]) ** 2).sum(axis=2)
    return np.stack([mean, m2], axis=2)


def combine_row_stats(stats: np.ndarray, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and unbiased standard deviation over rows with `stats` (k, C, 2).

    Each row holds `pixels` values per band: Chan et al.'s pairwise combination, exact in float64
    (the same statistics `fed_uml.data.normalize.band_stats` computes on the pixels).
    """
    k = stats.shape[0]
    means, m2 = stats[..., 0], stats[..., 1]
    mean = means.mean(axis=0)
    total_m2 = m2.sum(axis=0) + pixels * ((means - mean) ** 2).sum(axis=0)
    n = k * pixels
    std = np.sqrt(total_m2 / max(n - 1, 1))
    return mean, std


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The header of a C-ordered .npy file of this shape and dtype (its data follow it)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def block_digest(images: bytes | memoryview, stats: bytes | memoryview) -> str:
    """SHA-256 of a block's image bytes and row statistics, which verification recomputes."""
    h = hashlib.sha256()
    h.update(images)
    h.update(stats)
    return h.hexdigest()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write, sync, rename: a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
