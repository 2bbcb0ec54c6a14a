"""Bad input: every problem is an error that names the file (or path and setting); skips are counted."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from fed_uml.data import load_dataset
from fed_uml.data.bigearthnet import BigEarthNet
from fed_uml.data.errors import DataError, DatasetNotFoundError
from fed_uml.data.eurosat import EuroSAT
from fed_uml.data.eurosat_sar import EuroSATSAR
from fed_uml.data.raster import read_tiff
from tests.fixtures.make_fixtures import (
    dataset_config,
    make_bigearthnet_v1,
    make_eurosat_ms,
    make_eurosat_sar,
)


@pytest.fixture
def eurosat(tmp_path):
    make_eurosat_ms(tmp_path, per_class_train=1, per_class_test=1)
    return tmp_path


def first_file(root, split="train"):
    ds = EuroSAT(root, split=split)
    return ds, ds.records[0].files["image"]


def test_no_root_setting(monkeypatch):
    monkeypatch.delenv("FED_UML_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"dataset.root=.*FED_UML_DATA"):
        load_dataset(dataset_config("eurosat_ms", None))


def test_missing_root_names_path_and_setting(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset(dataset_config("eurosat_ms", missing))
    assert str(missing / "eurosat_ms") in str(e.value) and "dataset.root" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="bigearthnet_v1"):
        load_dataset(dataset_config("bigearthnet", tmp_path))


def test_missing_split_file(eurosat):
    (eurosat / "eurosat_ms" / "eurosat-test.txt").unlink()
    with pytest.raises(DataError, match="eurosat-test.txt: split file not found"):
        EuroSAT(eurosat, split="test")


def test_wrong_band_count_and_size(eurosat):
    ds, path = first_file(eurosat)
    tifffile.imwrite(path, np.ones((64, 64, 12), np.uint16), photometric="minisblack", planarconfig="contig")
    with pytest.raises(DataError, match="expected 13 band") as e:
        ds[0]
    assert str(path) in str(e.value)
    tifffile.imwrite(path, np.ones((32, 32, 13), np.uint16), photometric="minisblack", planarconfig="contig")
    with pytest.raises(DataError, match="expected 64 x 64 pixels, found 32 x 32"):
        ds[0]


def test_corrupt_and_truncated_tiff(eurosat):
    ds, path = first_file(eurosat)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as e:
        ds[0]
    assert str(path) in str(e.value)
    path.write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_tiff(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_pixels(tmp_path, bad):
    make_eurosat_ms(tmp_path, per_class_train=1, per_class_test=1)
    make_eurosat_sar(tmp_path, per_class_train=1, per_class_test=1)
    ds = EuroSATSAR(tmp_path, split="train")
    path = ds.records[0].files["image"]
    arr = tifffile.imread(path)
    arr[0, 5, 5] = bad
    tifffile.imwrite(path, arr, photometric="minisblack")
    with pytest.raises(DataError, match="1 pixel.*NaN or infinite") as e:
        ds[0]
    assert str(path) in str(e.value)


def test_unknown_class_name(eurosat):
    split = eurosat / "eurosat_ms" / "eurosat-train.txt"
    split.write_text(split.read_text() + "Desert_1.tif\n")
    with pytest.raises(DataError, match="unknown class name 'Desert'") as e:
        EuroSAT(eurosat, split="train")
    assert str(split) in str(e.value)


def test_bigearthnet_missing_band_wrong_size_unknown_label(tmp_path):
    make_bigearthnet_v1(tmp_path)
    ds = BigEarthNet(tmp_path, split="train", sensor="s2")
    rec = ds.records[0]
    band = rec.files["folder"] / f"{rec.files['name']}_B05.tif"
    band.unlink()
    with pytest.raises(DataError, match="file not found") as e:
        ds[0]
    assert str(band) in str(e.value)
    tifffile.imwrite(band, np.ones((120, 120), np.uint16))
    with pytest.raises(DataError, match="band B05 should be 60 x 60 pixels, found 120 x 120"):
        ds[0]
    meta = rec.files["folder"] / f"{rec.files['name']}_labels_metadata.json"
    meta.write_text('{"labels": ["Moon craters"]}')
    with pytest.raises(DataError, match="unknown BigEarthNet label 'Moon craters'") as e:
        BigEarthNet(tmp_path, split="train", sensor="s2")
    assert str(meta) in str(e.value)
    meta.unlink()
    with pytest.raises(DataError, match="label file not found"):
        BigEarthNet(tmp_path, split="train", sensor="s2")


def test_skip_reports_how_many_files(eurosat, caplog):
    ds, path = first_file(eurosat)
    path.write_bytes(path.read_bytes()[:100])
    split = eurosat / "eurosat_ms" / "eurosat-train.txt"
    split.write_text(split.read_text() + "Desert_1.tif\n")
    with pytest.raises(DataError):
        load_dataset(dataset_config("eurosat_ms", eurosat))
    with caplog.at_level(logging.WARNING):
        data = load_dataset(dataset_config("eurosat_ms", eurosat, on_error="skip", unpaired=False))
    total = sum(d.info["skipped"]["count"] for d in data.values())
    assert total == 4  # per modality: the unknown class line and the truncated file
    assert any("skipped 2 bad file(s)" in r.getMessage() for r in caplog.records)
    assert all(len(d.train) == 9 for d in data.values())
    assert any(str(path) in f for f in data["rgb"].info["skipped"]["files"])
