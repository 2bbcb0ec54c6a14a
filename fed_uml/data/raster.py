"""Raster I/O shared by every reader and by `fed_uml.predict`: decode, check, resample.

Why one module: a GeoTIFF or JPEG must be read the same way in training and in prediction,
and every bad file must fail the same way, as a `DataError` that names it (truncated or
corrupt files, unsupported pixel types, a pixel type the data set does not ship, NaN/inf
pixels, wrong band count or size, and headers that declare rasters too large to be a patch,
refused before decoding). Arrays come
back as float32 (C, H, W) in the file's physical units; nothing here normalises.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fed_uml.data.errors import DataError

# A raster declaring more than this is refused from its header alone, before any pixel is
# decoded: far above any supported patch (SEN12MS, 13 x 256 x 256 float32, is 3.4 MB), so a
# corrupt or hostile header (a sparse or deflate-bomb TIFF of a few bytes) cannot exhaust memory.
MAX_RASTER_BYTES = 256 << 20


def read_tiff(path: str | Path, dtypes: Sequence[str] | None = None, product: str = "") -> np.ndarray:
    """A TIFF as a float32 (C, H, W) array; any read problem becomes a DataError naming the file.

    tifffile reports pixel-interleaved files (EuroSAT) as (H, W, C) with axes ending in 'S'
    and band-sequential ones as (C, H, W); both come back as (C, H, W). `dtypes`: the pixel
    types the data set ships (`product` says which data set and what the values are); any
    other is refused from the header, since the values would be in other units (an int16 S1
    file is not backscatter in dB) and every value would be converted to float32 silently.
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
            if dtypes is not None and series.dtype.name not in dtypes:
                raise DataError(path, f"pixel type {series.dtype.name}, but {product or 'the data set'} is "
                                      f"shipped as {' or '.join(dtypes)}: a converted or foreign file? Use "
                                      "the data set's own files")
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
