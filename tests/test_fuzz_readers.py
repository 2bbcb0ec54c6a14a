"""Hostile input for the data readers, fuzzed with hypothesis.

Every bad file must end in a clear error, a `DataError` (fed_uml/data/errors.py) whose
message names the offending file: truncated, corrupt or random TIFF bytes; wrong pixel
type or raster shape; NaN/inf pixels; TIFF headers that declare huge rasters (which must
neither exhaust memory nor slip through); path traversal in split files; unknown class and
label names. Never an obscure exception from deep inside tifffile or numpy, never silent
acceptance. Cases that fuzzing once caught the library mishandling are marked `regression`
with what went wrong.

Example counts are modest (the suite runs in seconds); the number of cases each test tried
is printed at the end of the module (`FED_UML_FUZZ_COUNTS=path.json` also writes them).
"""

from __future__ import annotations

import contextlib
import json
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from fed_uml.data.bigearthnet import CLASSES_43, BigEarthNet
from fed_uml.data.errors import DataError
from fed_uml.data.eurosat import CLASSES, EuroSAT
from fed_uml.data.eurosat_sar import EuroSATSAR
from fed_uml.data.raster import read_tiff
from tests.fixtures.make_fixtures import (
    make_bigearthnet_v1,
    make_eurosat_ms,
    make_eurosat_sar,
)
from tests.fuzz_helpers import FUZZ, CaseCounter, fewer

# FED_UML_FUZZ_EXAMPLES=500 for a longer hunt (default 60 per test, half for the slower ones)
FEW = fewer(2)
CASES = CaseCounter(__name__)
tick = CASES.tick


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    CASES.report(request)


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def address_space_limit(extra: int = 3 << 30):
    """Cap this process's address space at its current size + `extra`, so a reader that
    tries to allocate a huge raster fails at once instead of exhausting the machine."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def replaced(path: Path, data: bytes):
    """`path` holds `data` inside the block and its original bytes afterwards."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield path
    finally:
        path.write_bytes(original)


def tiff_header(width: int, height: int, spp: int = 1, bits: int = 16, fmt: int = 1, compression: int = 1,
                data: bytes = b"", strips: int = 1, declared_bytes: int | None = None) -> bytes:
    """A hand-made little-endian TIFF whose header declares width x height x spp samples.

    The file holds only `data`; all `strips` strip offsets point at it, each declared
    `declared_bytes` long (default: len(data)), so the header may promise far more than
    the file has (truncation), nothing at all (sparse: byte count 0), or, with a zlib
    stream, far more after decompression than the file's size (a decompression bomb).
    """
    rows = -(-height // strips)
    count = len(data) if declared_bytes is None else declared_bytes
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, compression),
               (262, 3, 1, 1), (273, 4, strips, None), (277, 3, 1, spp), (278, 4, 1, rows),
               (279, 4, strips, None), (284, 3, 1, 1), (339, 3, 1, fmt)]
    ifd = 8
    arrays = ifd + 2 + 12 * len(entries) + 4
    offsets_at, counts_at = arrays, arrays + 4 * strips
    data_at = counts_at + 4 * strips
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", len(entries)))
    for tag, typ, n, value in entries:
        if tag in (273, 279):
            single = data_at if tag == 273 else count
            value = single if strips == 1 else (offsets_at if tag == 273 else counts_at)
        out += struct.pack("<HHIHH", tag, typ, n, value, 0) if typ == 3 else struct.pack("<HHII", tag, typ, n, value)
    out += struct.pack("<I", 0)
    out += struct.pack(f"<{strips}I", *[data_at] * strips) + struct.pack(f"<{strips}I", *[count] * strips)
    return bytes(out + data)


def assert_names(err: BaseException, path: Path) -> None:
    assert str(path) in str(err), f"the error does not name {path}: {err}"


def assert_valid_or_data_error(load, path: Path, shape: tuple[int, ...]):
    """`load()` either returns a finite float32 raster of `shape` or raises a DataError naming `path`."""
    try:
        out = load()
    except DataError as e:
        assert_names(e, path)
        return None
    arr = np.asarray(out["image"] if isinstance(out, dict) else out)
    assert arr.dtype == np.float32 and arr.shape == shape and np.isfinite(arr).all(), (arr.dtype, arr.shape)
    return arr


# ----------------------------------------------------------------------------- fixtures


class Data:
    """The fixture data sets, read once per module."""

    def __init__(self, root: Path):
        self.root = root
        self.ms = EuroSAT(root, split="train")
        self.sar = EuroSATSAR(root, split="train")
        self.ben = BigEarthNet(root, split="train", sensor="s2")
        rec = self.ben.records[0]
        self.ben_band = rec.files["folder"] / f"{rec.files['name']}_B05.tif"  # 60 x 60 px
        self.meta = rec.files["folder"] / f"{rec.files['name']}_labels_metadata.json"
        self.targets = {
            "ms": (self.ms, self.ms.records[0].files["image"], (13, 64, 64)),
            "sar": (self.sar, self.sar.records[0].files["image"], (2, 64, 64)),
            "ben": (self.ben, self.ben_band, (12, 120, 120)),
        }
        self.split_ms = root / "eurosat_ms" / "eurosat-train.txt"
        self.split_ben = root / "bigearthnet_v1" / "bigearthnet-train.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    root = tmp_path_factory.mktemp("fuzz-data")
    make_eurosat_ms(root, per_class_train=1, per_class_test=1)
    make_eurosat_sar(root, per_class_train=1, per_class_test=1)
    make_bigearthnet_v1(root)
    return Data(root)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-scratch")


TARGETS = st.sampled_from(["ms", "sar", "ben"])

# ----------------------------------------------------------------------------- raster bytes


@FUZZ
@given(target=TARGETS, cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_tiff_is_refused(data, target, cut):
    """Refused naming the file, unless the cut only removed trailing metadata (tifffile
    wrote tag values after the pixels): then the pixels must be exactly the original ones."""
    tick()
    ds, path, shape = data.targets[target]
    original, pixels = path.read_bytes(), ds[0]["image"]
    with replaced(path, original[: int(cut * len(original))]), address_space_limit():
        arr = assert_valid_or_data_error(lambda: ds[0], path, shape)
    assert arr is None or np.array_equal(arr, pixels.numpy()), "a truncated file gave different pixels"


@FUZZ
@given(target=TARGETS, flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
                                      min_size=1, max_size=8))
def test_corrupt_tiff_bytes_give_a_data_error_or_a_valid_raster(data, target, flips):
    tick()
    ds, path, shape = data.targets[target]
    raw = bytearray(path.read_bytes())
    for where, value in flips:
        raw[int(where * len(raw))] = value
    with replaced(path, bytes(raw)), address_space_limit():
        assert_valid_or_data_error(lambda: ds[0], path, shape)


@FUZZ
@given(magic=st.sampled_from([b"", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00"]), body=st.binary(max_size=512))
def test_random_bytes_are_refused(scratch, magic, body):
    tick()
    path = scratch / "random.tif"
    path.write_bytes(magic + body)
    with address_space_limit(), pytest.raises(DataError) as e:
        read_tiff(path)
    assert_names(e.value, path)


# (bits, SampleFormat) that numpy has a type for; the others are test_unsupported_pixel_type_is_refused
PIXEL_TYPES = [(1, 1), (7, 1), (12, 1), (8, 1), (8, 2), (16, 1), (16, 2), (16, 3), (32, 1), (32, 2), (32, 3),
               (64, 1), (64, 2), (64, 3), (8, 4), (16, 4)]


@FUZZ
@given(width=st.integers(1, 2**32 - 1), height=st.integers(1, 2**32 - 1), spp=st.integers(1, 65535),
       pixel=st.sampled_from(PIXEL_TYPES), data_len=st.integers(1, 256))
def test_huge_declared_size_in_a_tiff_header_is_refused(scratch, width, height, spp, pixel, data_len):
    """An uncompressed TIFF whose header declares (up to 2^32 x 2^32 x 65535 samples) more
    than its few bytes: a DataError naming the file, under a memory cap (an attempt to
    allocate the declared raster would fail here, not exhaust the machine)."""
    tick()
    bits, fmt = pixel
    path = scratch / "huge.tif"
    path.write_bytes(tiff_header(width, height, spp, bits, fmt, data=bytes(data_len)))
    declared = width * height * spp * bits // 8
    with address_space_limit():
        try:
            arr = read_tiff(path)
        except DataError as e:
            assert_names(e, path)
            return
    # accepted: only a tiny raster that the file's bytes do cover
    assert declared <= data_len and arr.dtype == np.float32 and arr.ndim == 3 and np.isfinite(arr).all()
    assert arr.size == width * height * spp


@pytest.mark.regression(reason=(
    "for a pixel type numpy lacks (signed or float samples of 1, 7 or 12 bits, 8-bit floats) tifffile only "
    "logs 'failed to reshape' and returns an empty array, so read_tiff returns a raster of 0 samples, e.g. "
    "shape (0, 3, 1) (the readers' check_shape then refuses it, but read_tiff should: compare arr.size with "
    "series.size)"))
@pytest.mark.parametrize("bits,fmt", [(1, 2), (7, 3), (12, 2), (8, 3)])
def test_unsupported_pixel_type_is_refused(scratch, bits, fmt):
    tick()
    path = scratch / "odd.tif"
    path.write_bytes(tiff_header(1, 3, 1, bits, fmt, data=bytes(range(1, 5))))
    with pytest.raises(DataError) as e:
        read_tiff(path)
    assert_names(e.value, path)


def _bomb() -> bytes:
    """~30 kB declaring 8192 x 40960 x 13 uint16 (8.1 GiB) of valid deflate strips."""
    width, height, spp, strips = 8192, 40960, 13, 640
    rows = height // strips
    stream = zlib.compress(bytes(rows * width * spp * 2), 9)
    return tiff_header(width, height, spp, 16, 1, compression=8, data=stream, strips=strips)


SPARSE_OR_BOMB = {
    # header only, strips of byte count 0: tifffile fills them with zeros
    "sparse 64x64x13 (no pixel data at all)": lambda: tiff_header(64, 64, 13, compression=8, declared_bytes=0),
    "sparse 2000x2000x13 (100 MiB of zeros from 150 bytes)":
        lambda: tiff_header(2000, 2000, 13, compression=8, declared_bytes=0),
    "sparse 20000x20000x13 (9.7 GiB declared)": lambda: tiff_header(20000, 20000, 13, compression=8,
                                                                      declared_bytes=0),
    "deflate bomb 8192x40960x13 (8.1 GiB declared)": _bomb,
}


@pytest.mark.regression(reason=(
    "read_tiff decodes whatever size a TIFF header declares: a ~150-byte sparse TIFF (strip byte counts 0) "
    "is accepted as an all-zero raster after allocating it in full (2000x2000x13: ~300 MB; 20000x20000x13 "
    "would need ~29 GB and only fails on a memory limit); see the report: check series.size * itemsize "
    "against a limit and refuse empty strips before series.asarray()"))
@pytest.mark.parametrize("case", list(SPARSE_OR_BOMB))
def test_sparse_tiff_or_decompression_bomb_is_refused_before_decoding(scratch, case):
    tick()
    path = scratch / "bomb.tif"
    path.write_bytes(SPARSE_OR_BOMB[case]())
    with address_space_limit(1 << 30), pytest.raises(DataError, match="too large|no data") as e:
        read_tiff(path)
    assert_names(e.value, path)
    assert not isinstance(e.value.__cause__, MemoryError), "refused only because the allocation failed"


# ----------------------------------------------------------------------------- pixel types and shapes

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float16, np.float32, np.float64, np.bool_]


def _shapes(bands: int, size: int) -> st.SearchStrategy:
    good = [(size, size, bands), (bands, size, size)]
    other = st.tuples(st.integers(1, 3 * size), st.integers(1, 3 * size), st.integers(1, 20))
    return st.one_of(st.sampled_from(good), other, st.tuples(st.integers(1, 80), st.integers(1, 80)),
                     st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 40), st.integers(1, 40)))


def _write_raster(path: Path, arr: np.ndarray) -> None:
    """Pixel-interleaved (EuroSAT's layout) where tifffile can store it so, else plain."""
    if arr.ndim == 3:
        try:
            return tifffile.imwrite(path, arr, photometric="minisblack", planarconfig="contig")
        except ValueError:
            pass
    tifffile.imwrite(path, arr, photometric="minisblack")


def _pixels(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 1000).astype(dtype)


@FUZZ
@given(target=st.sampled_from(["ms", "sar"]), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       shape=st.data())
def test_wrong_pixel_type_or_raster_shape(data, scratch, target, dtype, seed, shape):
    tick()
    ds, path, want = data.targets[target]
    shape = shape.draw(_shapes(want[0], want[1]))
    tmp = scratch / "raster.tif"
    _write_raster(tmp, _pixels(np.random.default_rng(seed), shape, dtype))
    with replaced(path, tmp.read_bytes()):
        arr = assert_valid_or_data_error(lambda: ds[0], path, want)
    if arr is not None:  # accepted: only a raster of the right band count and size
        assert sorted(shape) == sorted(want), shape


@FEW
@given(dtype=st.sampled_from(DTYPES), height=st.integers(1, 200), width=st.integers(1, 200), seed=st.integers(0, 99))
def test_wrong_bigearthnet_band_size(data, scratch, dtype, height, width, seed):
    tick()
    ds, path, want = data.targets["ben"]
    tmp = scratch / "band.tif"
    _write_raster(tmp, _pixels(np.random.default_rng(seed), (height, width), dtype))
    with replaced(path, tmp.read_bytes()):
        arr = assert_valid_or_data_error(lambda: ds[0], path, want)
    if arr is not None:
        assert (height, width) == (60, 60)


@pytest.mark.regression(reason=(
    "read_tiff casts complex pixels to float32 with only a ComplexWarning, silently dropping the "
    "imaginary part; it should refuse pixel types that are not integer, float or bool"))
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_pixels_are_refused(data, scratch, dtype):
    tick()
    ds, path, want = data.targets["sar"]
    tmp = scratch / "complex.tif"
    tifffile.imwrite(tmp, (np.ones((2, 64, 64)) * (1 + 1j)).astype(dtype), photometric="minisblack")
    with replaced(path, tmp.read_bytes()), pytest.raises(DataError) as e:
        ds[0]
    assert_names(e.value, path)


@FUZZ
@given(bad=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 63), st.integers(0, 63),
                              st.sampled_from([np.nan, np.inf, -np.inf])), min_size=1, max_size=20))
def test_nan_and_inf_pixels_are_counted(data, scratch, bad):
    tick()
    ds, path, _ = data.targets["sar"]
    # float32, the type EuroSAT-SAR ships (other float types are refused for that alone)
    arr = np.random.default_rng(0).normal(-15, 3, (2, 64, 64)).astype(np.float32)
    for b, y, x, value in bad:
        arr[b, y, x] = value
    n = int((~np.isfinite(arr)).sum())
    tmp = scratch / "nonfinite.tif"
    tifffile.imwrite(tmp, arr, photometric="minisblack")
    with replaced(path, tmp.read_bytes()), pytest.raises(DataError, match=rf"\b{n} pixel\(s\) are NaN or infinite"):
        ds[0]


# ----------------------------------------------------------------------------- split files

SEGMENTS = st.sampled_from(["..", ".", "", "etc", "passwd", "Forest", "Forest_1.tif", "Forest_1.jpg", "tmp",
                            "AnnualCrop_1", "..\\..", "~", "$HOME", "%2e%2e"])
TRAVERSAL = st.builds(lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
                      st.booleans(), st.lists(SEGMENTS, min_size=1, max_size=6))
HOSTILE_LINE = st.one_of(TRAVERSAL, st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40))


@FUZZ
@given(line=HOSTILE_LINE, where=st.integers(0, 20))
def test_eurosat_split_lines_never_reach_outside_the_data_folder(data, line, where):
    """Whatever a split file lists, the reader refuses it (naming the split file) or reads a
    file inside the data set's own class folders."""
    tick()
    lines = data.split_ms.read_text().splitlines()
    lines.insert(min(where, len(lines)), line)
    with replaced(data.split_ms, ("\n".join(lines) + "\n").encode()):
        try:
            ds = EuroSAT(data.root, split="train")
        except DataError as e:
            assert_names(e, data.split_ms)
            return
    inside = data.ms.image_dir.resolve()
    for r in ds.records:
        assert Path(r.files["image"]).resolve().is_relative_to(inside), (line, r.files["image"])


EURO_PATH = pytest.mark.regression(reason=(
    "EuroSATBase._index keeps only Path(line).stem, so a split line with directories or '..' whose stem "
    "is a valid name is accepted silently (it reads the in-folder file); it should be refused naming the "
    "split file"))
EUROSAT_PATH_LINES = [
    pytest.param("../../etc/passwd", id="dotdot-unknown-class"),
    pytest.param("/etc/passwd", id="absolute-unknown-class"),
    pytest.param("../../../../AnnualCrop_1.tif", marks=EURO_PATH, id="dotdot-known-stem"),
    pytest.param("/tmp/elsewhere/AnnualCrop_1.tif", marks=EURO_PATH, id="absolute-known-stem"),
    pytest.param("AnnualCrop/../../AnnualCrop_1.jpg", marks=EURO_PATH, id="nested-known-stem"),
]


@pytest.mark.parametrize("line", EUROSAT_PATH_LINES)
def test_eurosat_split_lines_with_paths_are_refused(data, line):
    tick()
    text = data.split_ms.read_text().replace("AnnualCrop_1.tif\n", "")  # drop the stem it may duplicate
    with replaced(data.split_ms, (text + line + "\n").encode()), pytest.raises(DataError) as e:
        EuroSAT(data.root, split="train")
    assert_names(e.value, data.split_ms)


@pytest.fixture(scope="module")
def outside_patch(tmp_path_factory, data) -> Path:
    """A complete, valid-looking S2 patch outside the data root (a copy of a real one), laid
    out so that an absolute name in the split file finds it: the reader joins
    `<folder>/<name>_<band>.tif`, which for an absolute name is `<name>_<band>.tif`."""
    import shutil

    rec = data.ben.records[0]
    parent = tmp_path_factory.mktemp("outside")
    outside = parent / "S2X_OUTSIDE"
    outside.mkdir()
    for f in rec.files["folder"].iterdir():
        shutil.copy(f, parent / f.name.replace(rec.files["name"], outside.name))
    return outside


BEN_ROWS = {
    "dotdot": lambda out: "../../../../etc,../../../../etc",
    "absolute-missing": lambda out: "/etc,/etc",
    "absolute-outside-patch": lambda out: f"{out},{out}",
    "dotdot-outside-patch": lambda out: "../../" * 12 + str(out).lstrip("/") + ",x",
}


@pytest.mark.regression(reason=(
    "BigEarthNet._index joins the CSV's patch names onto the sensor folder unchecked: '../' or absolute "
    "names read label files (and bands) outside the data root, silently when they exist there, else with an "
    "error naming that outside file instead of the split file; names must be plain folder names"))
@pytest.mark.parametrize("row", list(BEN_ROWS))
def test_bigearthnet_split_rows_with_paths_are_refused(data, outside_patch, row):
    tick()
    text = data.split_ben.read_text() + BEN_ROWS[row](outside_patch) + "\n"
    with replaced(data.split_ben, text.encode()), pytest.raises(DataError) as e:
        BigEarthNet(data.root, split="train", sensor="s2")
    assert_names(e.value, data.split_ben)


# ----------------------------------------------------------------------------- class and label names

CLASS_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9 -]{0,24}", fullmatch=True).filter(lambda s: s not in CLASSES)


@FUZZ
@given(name=CLASS_NAME, n=st.integers(0, 10**6), ext=st.sampled_from([".tif", ".jpg", ""]))
def test_unknown_eurosat_class_name(data, name, n, ext):
    tick()
    line = f"{name}_{n}{ext}"
    with replaced(data.split_ms, (data.split_ms.read_text() + line + "\n").encode()), \
            pytest.raises(DataError, match="unknown class name") as e:
        EuroSAT(data.root, split="train")
    assert_names(e.value, data.split_ms)
    assert repr(line) in str(e.value)


LABEL = st.one_of(st.sampled_from(CLASSES_43), st.text(min_size=0, max_size=30))


@FUZZ
@given(labels=st.lists(LABEL, min_size=1, max_size=5).filter(lambda ls: any(x not in CLASSES_43 for x in ls)))
def test_unknown_bigearthnet_label(data, labels):
    tick()
    with replaced(data.meta, json.dumps({"labels": labels}).encode()), \
            pytest.raises(DataError, match="unknown BigEarthNet label") as e:
        BigEarthNet(data.root, split="train", sensor="s2")
    assert_names(e.value, data.meta)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=3), max_leaves=8)


@FUZZ
@given(doc=st.one_of(st.binary(max_size=200), JSONISH.map(lambda v: json.dumps(v).encode()),
                     st.dictionaries(st.sampled_from(["labels", "label", "Labels"]), JSONISH, max_size=2)
                     .map(lambda d: json.dumps(d).encode())))
def test_malformed_label_file(data, doc):
    tick()
    with replaced(data.meta, doc):
        try:
            ds = BigEarthNet(data.root, split="train", sensor="s2")
        except DataError as e:
            assert_names(e, data.meta)
            return
    labels = json.loads(doc)["labels"]  # accepted: only a list of known class names
    assert isinstance(labels, list) and all(x in CLASSES_43 for x in labels)
    assert len(ds) == len(data.ben)
