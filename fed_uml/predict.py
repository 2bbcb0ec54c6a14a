"""Classify new imagery in its native format with a saved model (`fed_uml.model_file`).

Inputs, recognised per file or folder (each one sample), all read with the data sets' own
readers (`fed_uml.data`), so a scene is read exactly as in training:

    EuroSAT MS GeoTIFF      13 bands B01..B12, B8A: the model's bands are picked by name
    EuroSAT-SAR GeoTIFF     2 bands VV, VH
    EuroSAT RGB JPEG        B04, B03, B02 as 8-bit numbers (only for a model trained on them)
    BigEarthNet band folder ``<name>/<name>_<band>.tif`` (S2 B01..B12, B8A at 120/60/20 px; S1 VV, VH),
                            v1 or v2 layout: the model's bands by name, resampled as in training
    SEN12MS patch           ``ROIs<n>_<season>_<s1|s2>_<scene>_p<patch>.tif`` (s2: SEN12MS band order)
    plain GeoTIFF           any other TIFF with exactly the model's number of bands, taken to be
                            the model's bands in the model's order (`SavedModel.bands`)

A folder that is not a band folder is searched recursively for such inputs (in sorted order);
other files (json, txt, csv) are ignored. An input must be a patch of the size the model's
data set delivered (`SavedModel.input_size`: 64 px for EuroSAT, 120 px for BigEarthNet,
whose band folder is one 120 px patch on the 10 m grid whatever the sizes of its 20 m and 60
m band files): a patch of another size covers another area or has another pixel size, which
the model has never seen. `resize=True` (`--resize`) takes it anyway. Every input is then
resampled to the model's image size (bilinear, as the readers do), normalised with the
model's own band statistics and classified in batches. A bad input (unreadable, wrong
band count or size, bands of another modality, 8-bit imagery for a reflectance model, a
pixel type its data set does not ship) is a `DataError` naming the file; `on_error="skip"`
leaves it out and reports it.

Output (`write_csv`, written atomically): single-label models give `file, predicted_class,
prob_<class>...` (softmax); multi-label models give `file, predicted_labels, prob_<class>...`,
the labels joined by `LABEL_SEPARATOR` (every class whose sigmoid score reaches the class's
threshold in the model file; empty where none does). `check_output` refuses a bad output
path before any input is read; `check_recorded` compares the model file with the SHA-256 its
run's results.json recorded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fed_uml.data.bigearthnet import BAND_SIZE, BigEarthNetBandReader
from fed_uml.data.errors import DataError
from fed_uml.data.eurosat import MS_BANDS, RGB_BANDS, EuroSAT, EuroSATRGB
from fed_uml.data.eurosat_sar import SAR_BANDS
from fed_uml.data.raster import read_jpeg, read_tiff, resample, tiff_band_count
from fed_uml.data.sen12ms import SEN12MS, parse_name
from fed_uml.errors import SettingsError
from fed_uml.model_file import LABEL_SEPARATOR, ModelFileError, SavedModel
from fed_uml.results import recorded_digest, sha256_file, write_text_atomic

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ON_ERROR = ("raise", "skip")


class _BandFolderReader(BigEarthNetBandReader):
    """BigEarthNet's one-file-per-band reader; bands at their native size or already at 120 px (v2)."""

    STRICT_SIZES = False


def is_band_folder(path: Path) -> bool:
    """A BigEarthNet patch folder: `<name>/<name>_<band>.tif` for some BigEarthNet band."""
    return path.is_dir() and any((path / f"{path.name}_{b}.tif").is_file() for b in BAND_SIZE)


def find_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """The samples named by `paths`.

    Files as given, band folders as one sample, other folders searched recursively (sorted; hidden
    entries and non-image files skipped).
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir() or is_band_folder(p):
            out.append(p)
            continue
        found = _walk(p)
        if not found:
            raise DataError(p, "no GeoTIFF, JPEG or BigEarthNet band folder found in this folder")
        out.extend(found)
    return out


def _walk(folder: Path) -> list[Path]:
    out = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            out.extend([child] if is_band_folder(child) else _walk(child))
        elif child.suffix.lower() in TIFF_SUFFIXES + IMAGE_SUFFIXES:
            out.append(child)
    return out


def _pick(arr: np.ndarray, have: Sequence[str], saved: SavedModel, path: Path, layout: str) -> np.ndarray:
    """The model's bands, by name, out of a raster whose bands are `have`."""
    missing = [b for b in saved.bands if b not in have]
    if missing:
        raise DataError(path, f"{layout} with bands {', '.join(have)}; the model (modality {saved.modality!r}) "
                              f"needs {', '.join(saved.bands)}: wrong modality? (missing {', '.join(missing)})")
    return arr[[list(have).index(b) for b in saved.bands]]


def _trained_on_jpeg(saved: SavedModel) -> bool:
    return saved.source.get("reader") == EuroSATRGB.NAME


def _check_size(path: Path, size: tuple[int, int], saved: SavedModel, resize: bool, what: str = "") -> None:
    """Refuse a patch of another size than the model's data set delivered, unless `resize`."""
    if resize or tuple(size) == tuple(saved.input_size):
        return
    h, w = saved.input_size
    source = saved.source.get("reader") or saved.source.get("dataset") or "its data set"
    raise DataError(path, f"{what or 'is'} {size[0]} x {size[1]} pixels, but the model was trained on {h} x {w} px "
                          f"patches ({source}): a patch of another size covers another area or has another "
                          f"pixel size. Pass --resize to resample it to the model's input anyway")


def read_input(path: str | Path, saved: SavedModel, resize: bool = False) -> np.ndarray:
    """One sample as float32 (C, H, W): the model's bands, in physical units, at its image size.

    Its size must be the model's `input_size` unless `resize` (module docstring).
    """
    path = Path(path)
    size = saved.image_size[0]  # square (checked by `predict`)
    if path.is_dir():
        if not is_band_folder(path):
            raise DataError(path, "a folder, but not a BigEarthNet band folder (<name>/<name>_<band>.tif)")
        have = [b for b in BAND_SIZE if (path / f"{path.name}_{b}.tif").is_file()]
        missing = [b for b in saved.bands if b not in have]
        if missing:
            raise DataError(path, f"BigEarthNet band folder with bands {', '.join(have)}; the model (modality "
                                  f"{saved.modality!r}) needs {', '.join(saved.bands)}: wrong modality? "
                                  f"(missing {', '.join(missing)})")
        if _trained_on_jpeg(saved):
            raise DataError(path, "reflectance bands, but the model was trained on 8-bit EuroSAT RGB JPEGs")
        grid = _BandFolderReader.NATIVE_SIZE
        _check_size(path, (grid, grid), saved, resize, "a BigEarthNet band folder, a patch of")
        return _BandFolderReader()._read_patch(path, path.name, saved.bands, size)
    if not path.exists():
        raise DataError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if not _trained_on_jpeg(saved):
            raise DataError(path, f"an 8-bit {suffix[1:].upper()} image, but the model was trained on "
                                  f"{saved.source.get('reader') or saved.source.get('dataset') or 'other'} "
                                  "data in physical units (reflectance or dB): classify its GeoTIFFs instead")
        arr = _pick(read_jpeg(path), RGB_BANDS, saved, path, "an RGB image")
    elif suffix in TIFF_SUFFIXES:
        arr = _read_tiff_input(path, saved)
    else:
        raise DataError(path, f"unsupported file type {path.suffix!r} (GeoTIFF .tif, JPEG .jpg or a "
                              "BigEarthNet band folder)")
    if arr.shape[1] != arr.shape[2]:
        raise DataError(path, f"is {arr.shape[1]} x {arr.shape[2]} pixels; the model classifies square patches "
                              f"({size} x {size})")
    _check_size(path, arr.shape[1:], saved, resize)
    return resample(np.ascontiguousarray(arr), size)


def _read_tiff_input(path: Path, saved: SavedModel) -> np.ndarray:
    try:
        _, sensor, _, _ = parse_name(path.name, path)
    except DataError:
        sensor = None
    if sensor is not None:  # a SEN12MS patch: its sensor's bands, in SEN12MS order
        if sensor not in SEN12MS.SENSORS:
            raise DataError(path, f"a SEN12MS {sensor} (land-cover) patch, not imagery")
        have = SEN12MS.SENSORS[sensor]
        arr = read_tiff(path, SEN12MS.DTYPES[sensor], f"SEN12MS sensor {sensor!r}")
        if arr.shape[0] != len(have):
            raise DataError(path, f"a SEN12MS {sensor} patch should have {len(have)} bands, found {arr.shape[0]}")
        layout = f"a SEN12MS {sensor} patch"
    else:
        n = tiff_band_count(path)
        ms_tile = n == len(MS_BANDS) != saved.channels
        # an unreadable file fails here, naming it; a EuroSAT MS tile must be as EuroSAT ships it
        arr = read_tiff(path, EuroSAT.DTYPES["ms"], "a 13-band EuroSAT MS tile") if ms_tile else read_tiff(path)
        n = arr.shape[0] if n is None else n
        if n == saved.channels:  # a plain GeoTIFF: the model's bands in its order
            return arr
        if n == len(MS_BANDS):
            have, layout = MS_BANDS, "a 13-band EuroSAT MS tile"
        elif n == len(SAR_BANDS):
            have, layout = SAR_BANDS, "a 2-band EuroSAT-SAR tile"
        else:
            hint = ""
            if is_band_folder(path.parent):
                hint = f" (one band of a BigEarthNet band folder: pass the folder {path.parent})"
            raise DataError(path, f"expected {saved.channels} band(s) ({', '.join(saved.bands)}, the model's order) "
                                  f"or a 13-band EuroSAT MS tile, found {n}{hint}")
    if _trained_on_jpeg(saved):
        raise DataError(path, f"{layout} in physical units, but the model was trained on 8-bit EuroSAT RGB JPEGs")
    return _pick(arr, have, saved, path, layout)


@dataclass
class Predictions:
    """A model's predictions, one row per input file, and the files it skipped."""

    files: list[str] = field(default_factory=list)
    # one (classes,) row per file: sigmoid scores (multi-label) or softmax probabilities
    probabilities: list[torch.Tensor] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)


def _progress(items: list[str | Path], enabled: bool, desc: str) -> Iterable[str | Path]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return items
    return tqdm(items, desc=desc, unit="file", file=sys.stderr, disable=None)


def predict(saved: SavedModel, inputs: Sequence[str | Path], batch_size: int = 64, on_error: str = "raise",
            progress: bool = False, resize: bool = False) -> Predictions:
    """Read, normalise and classify every input (see `find_inputs`), `batch_size` at a time.

    `resize`: take inputs of another size than the model's `input_size` (resampled).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    height, width = saved.image_size
    if height != width:
        raise ModelFileError(saved.path, f"the model was trained on {height} x {width} images; only square "
                                         "inputs are supported")
    out = Predictions()
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if batch:
            x = torch.from_numpy(np.stack([a for _, a in batch]).astype(np.float32, copy=False))
            out.files.extend(f for f, _ in batch)
            out.probabilities.extend(saved.probabilities(x))
            batch.clear()

    for path in _progress(list(inputs), progress, f"predict {saved.modality}"):
        try:
            arr = read_input(path, saved, resize)
        except Exception as e:  # an unexpected read failure still names the file
            err = e if isinstance(e, DataError) else DataError(path, f"cannot read: {type(e).__name__}: {e}")
            if on_error == "raise":
                raise err from (None if err is e else e)
            out.skipped.append(err)
            continue
        batch.append((str(path), arr))
        if len(batch) == batch_size:
            flush()
    flush()
    return out


def check_output(out: str | Path, model: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an output path `write_csv` could not use, before any input is read.

    A folder, a path that is not a regular file (a device, a pipe), the model file or an input, or a
    place that cannot be written. '-' is stdout (a file named '-' is `./-`).
    """
    if str(out) == "-":
        return
    path = Path(out)
    if path.is_dir():
        raise SettingsError(f"--out {out}: is a folder; give a file name, e.g. {path / 'predictions.csv'}")
    if path.exists() and not path.is_file():
        raise SettingsError(f"--out {out}: exists and is not a regular file (a device or a pipe?); the CSV "
                            "replaces the file it is written to")
    target = path.resolve()
    for given in (model, *inputs):
        if Path(given).resolve() == target:
            raise SettingsError(f"--out {out}: is {'the model file' if given == model else 'an input'}; it "
                                "would be overwritten")
    folder = path.parent if str(path.parent) else Path(".")
    existing = next((f for f in (folder, *folder.parents) if f.exists()), Path("."))
    if not existing.is_dir():
        raise SettingsError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingsError(f"--out {out}: cannot write into {existing} (permission denied)")


def check_recorded(path: str | Path, require: bool = False) -> str | None:
    """Compare the model file with the SHA-256 its run recorded.

    See `results.json["files"]`, `fed_uml.results.recorded_digest`.

    Returns None where they agree, or where no results.json lies near the file (a model
    copied away from its run) and `require` is off; otherwise the problem, as a warning to
    print, or, with `require`, raised as a ModelFileError. The check says the file is the one
    its run wrote; it does not say who wrote it (README "Reliability and security").
    """
    results, recorded = recorded_digest(path)
    if results is None:
        if not require:
            return None
        problem = "no results.json in its folder or the 3 folders above it, so it cannot be matched to a run"
    elif recorded is None and "files" not in _read_json(results):
        problem = (f"{results} records no file digests (written by a fed-uml from before runs recorded them?), "
                   "so the file cannot be matched to its run")
    elif recorded is None:
        problem = (f"{results} does not list it among the files its run wrote: it may come from another run "
                   "or have been copied there")
    else:
        actual = sha256_file(path)
        if actual == recorded:
            return None
        problem = (f"its SHA-256 {actual} is not the one {results} recorded for it ({recorded}): it was "
                   "replaced or modified after its run")
    if require:
        raise ModelFileError(path, f"{problem} (--require-recorded)")
    return f"{path}: {problem}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _csv_rows(saved: SavedModel, predictions: Predictions) -> Iterable[list[str]]:
    """The CSV of module docstring: header, then one row per classified input."""
    column = "predicted_labels" if saved.multi_label else "predicted_class"
    yield ["file", column, *(f"prob_{c}" for c in saved.class_names)]
    if not predictions.files:
        return
    probabilities = torch.stack(predictions.probabilities)
    for f, p, labels in zip(predictions.files, probabilities, saved.predicted(probabilities)):
        yield [f, LABEL_SEPARATOR.join(saved.class_names[i] for i in labels), *(f"{v:.6f}" for v in p.tolist())]


def write_csv(path: str | Path, saved: SavedModel, predictions: Predictions) -> None:
    """The predictions as CSV (module docstring) to `path` ('-': stdout), atomically.

    A temp file beside it, renamed over it once complete, so a crash never leaves half a CSV.
    """
    if str(path) == "-":
        csv.writer(sys.stdout).writerows(_csv_rows(saved, predictions))
        return
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(_csv_rows(saved, predictions))
    write_text_atomic(path, buffer.getvalue())
