"""Data a study must not silently accept: split files that share scenes, and rasters in a pixel
type the data set does not ship (issue 25, item 7), on tiny native-layout fixtures of every reader."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

from fed_uml.data import load_dataset
from fed_uml.data.bigearthnet import BigEarthNet
from fed_uml.data.bigearthnet_v2 import BigEarthNetV2
from fed_uml.data.errors import DataError
from fed_uml.data.eurosat import EuroSAT
from fed_uml.data.eurosat_sar import EuroSATSAR
from fed_uml.data.sen12ms import SEN12MS
from tests.fixtures.make_fixtures import (
    dataset_config,
    make_bigearthnet_v1,
    make_bigearthnet_v2,
    make_eurosat_ms,
    make_eurosat_sar,
    make_sen12ms,
)

# ------------------------------------------------------------------------ overlapping splits


def _refused_overlap(cfg: dict, later_file, earlier_file, shared: list[str]) -> None:
    with pytest.raises(DataError) as e:
        load_dataset(cfg)
    msg = str(e.value)
    assert msg.startswith(f"{later_file}:") and f"({earlier_file})" in msg, msg
    assert f"first {', '.join(shared)}:" in msg and "must not share scenes" in msg, msg


def test_eurosat_split_files_that_share_tiles_are_refused(tmp_path):
    folder = make_eurosat_ms(tmp_path, per_class_train=2, per_class_test=1)
    test = folder / "eurosat-test.txt"
    # torchgeo's EuroSAT fixture lists the same tiles in every split: here two train tiles in test
    test.write_text("AnnualCrop_1.tif\n" + test.read_text() + "Forest_2.tif\n")
    cfg = dataset_config("eurosat_ms", tmp_path)
    _refused_overlap(cfg, test, folder / "eurosat-train.txt", ["AnnualCrop_1", "Forest_2"])
    # a single-split reader alone is not concerned; the official disjoint files load
    assert len(EuroSAT(tmp_path, split="test")) == 12
    test.write_text("".join(line + "\n" for line in test.read_text().split()[1:-1]))
    assert sum(len(d.test) for d in load_dataset(cfg).values()) == 10  # dealt to the modalities


def test_bigearthnet_csv_splits_that_share_patches_are_refused(tmp_path):
    folder = make_bigearthnet_v1(tmp_path)
    train, test = folder / "bigearthnet-train.csv", folder / "bigearthnet-test.csv"
    first = train.read_text().splitlines()[0]
    test.write_text(test.read_text() + first + "\n")
    _refused_overlap(dataset_config("bigearthnet", tmp_path), test, train, [first.split(",")[0]])
    # val is pooled into training for multi-label: a val patch listed in test is refused too
    val = folder / "bigearthnet-val.csv"
    test.write_text(test.read_text().replace(first + "\n", "") + val.read_text().splitlines()[0] + "\n")
    _refused_overlap(dataset_config("bigearthnet", tmp_path), test, val,
                     [val.read_text().splitlines()[0].split(",")[0]])


def test_reben_metadata_that_lists_a_patch_in_two_splits_is_refused(tmp_path):
    folder = make_bigearthnet_v2(tmp_path)
    table = pq.read_table(folder / "metadata.parquet").to_pydict()
    row = table["split"].index("train")
    for key in table:  # the same patch once more, now in the test split
        table[key].append(table[key][row] if key != "split" else "test")
    import pyarrow as pa

    pq.write_table(pa.table(table), folder / "metadata.parquet")
    meta = folder / "metadata.parquet"
    _refused_overlap(dataset_config("bigearthnet_v2", tmp_path), meta, meta, [table["patch_id"][row]])


def test_sen12ms_split_lists_that_share_patches_are_refused(tmp_path):
    folder = make_sen12ms(tmp_path)
    train, test = folder / "train_list.txt", folder / "test_list.txt"
    shared = train.read_text().splitlines()[:2]
    test.write_text(test.read_text() + "".join(f"{n}\n" for n in shared))
    ids = [n.replace("_s2_", "_").removesuffix(".tif") for n in shared]
    _refused_overlap(dataset_config("sen12ms", tmp_path, image_size=32), test, train, ids)


# ------------------------------------------------------------------------ pixel types


def _rewrite(path, arr) -> None:
    tifffile.imwrite(path, arr, photometric="minisblack")


@pytest.mark.parametrize("reader", [BigEarthNet, BigEarthNetV2])
def test_bigearthnet_bands_in_a_pixel_type_it_does_not_ship_are_refused(tmp_path, reader):
    (make_bigearthnet_v1 if reader is BigEarthNet else make_bigearthnet_v2)(tmp_path)
    s1 = reader(tmp_path, split="train", sensor="s1")
    folder, name = s1.records[0].files["folder"], s1.records[0].files["name"]
    vv = folder / f"{name}_VV.tif"
    # an int16 S1 band (torchgeo's reBEN test fixture writes them) is not backscatter in dB
    _rewrite(vv, np.round(tifffile.imread(vv)).astype(np.int16))
    with pytest.raises(DataError, match=r"pixel type int16, but BigEarthNet S1 band VV is shipped as float32") as e:
        s1.load(s1.records[0])
    assert str(e.value).startswith(f"{vv}:")
    s2 = reader(tmp_path, split="train", sensor="s2")
    folder, name = s2.records[0].files["folder"], s2.records[0].files["name"]
    b02 = folder / f"{name}_B02.tif"
    _rewrite(b02, tifffile.imread(b02).astype(np.float32))
    with pytest.raises(DataError, match=r"pixel type float32, but BigEarthNet S2 band B02 is shipped as uint16"):
        s2.load(s2.records[0])


def test_eurosat_and_sen12ms_rasters_in_another_pixel_type_are_refused(tmp_path):
    make_eurosat_ms(tmp_path, per_class_train=1, per_class_test=0)
    make_eurosat_sar(tmp_path, per_class_train=1, per_class_test=0)
    make_sen12ms(tmp_path)
    ms = EuroSAT(tmp_path, split="train")
    path = ms.records[0].files["image"]
    tifffile.imwrite(path, tifffile.imread(path).astype(np.float32), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(DataError, match=r"pixel type float32, but EuroSAT MS sensor 'ms' is shipped as uint16"):
        ms.load(ms.records[0])
    sar = EuroSATSAR(tmp_path, split="train")
    path = sar.records[0].files["image"]
    _rewrite(path, tifffile.imread(path).astype(np.int16))
    with pytest.raises(DataError, match=r"pixel type int16, but EuroSAT-SAR sensor 'sar' is shipped as float32"):
        sar.load(sar.records[0])
    s1 = SEN12MS(tmp_path, split="train", sensor="s1")
    path = s1.records[0].files["s1"]
    _rewrite(path, tifffile.imread(path).astype(np.float64))
    with pytest.raises(DataError, match=r"pixel type float64, but SEN12MS sensor 's1' is shipped as float32") as e:
        s1.load(s1.records[0])
    assert str(e.value).startswith(f"{path}:")
