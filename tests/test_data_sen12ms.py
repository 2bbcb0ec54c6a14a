"""SEN12MS: scene labels from the land-cover patches (or the label file), region-level unpaired deal."""

from __future__ import annotations

import numpy as np
import pytest

from fed_uml.data import load_dataset
from fed_uml.data.errors import DataError
from fed_uml.data.sen12ms import (
    CLASSES,
    LABEL_FILE,
    SEN12MS,
    majority_class,
    parse_name,
)
from tests.fixtures.make_fixtures import dataset_config, make_sen12ms, sen12ms_patches

EXPECTED = {1: "Forest", 17: "Water", 12: "Croplands"}


@pytest.fixture
def root(tmp_path):
    make_sen12ms(tmp_path)
    return tmp_path


def test_majority_class():
    igbp = np.array([[1, 2, 10], [10, 10, 255]])  # forest 2, grassland 3, one no-data pixel
    assert CLASSES[majority_class(igbp, "x")] == "Grassland"
    assert CLASSES[majority_class(np.array([[6, 7, 12, 14]]), "x")] == "Shrubland"  # tie: lower index
    with pytest.raises(DataError, match="no valid IGBP pixel"):
        majority_class(np.zeros((2, 2)), "lc.tif")
    assert parse_name("ROIs1868_summer_s1_146_p202.tif", "x") == ("ROIs1868_summer", "s1", "146", "202")


def test_labels_from_land_cover_and_samples(root):
    ds = SEN12MS(root, split="train", sensor="s2", image_size=16)
    assert ds.label_source == "land-cover majority"
    truth = {f"ROIs1158_spring_{s}_p{p}": EXPECTED[igbp] for s, p, igbp, split in sen12ms_patches() if split == "train"}
    assert {r.scene: CLASSES[r.label] for r in ds.records} == truth
    s = ds[0]
    assert s["image"].shape == (13, 16, 16) and s["scene"] == ds.records[0].scene
    assert SEN12MS(root, split="test", sensor="s1")[0]["image"].shape == (2, 32, 32)


def test_official_label_file_wins(root):
    lines = ["patch class\n"] + [
        f"ROIs1158_spring_s2_{s}_p{p}.tif,{4 if s % 2 else 9}\n" for s, p, _, _ in sen12ms_patches()
    ]
    (root / "sen12ms" / LABEL_FILE).write_text("".join(lines))
    ds = SEN12MS(root, split="train", sensor="s1")
    assert ds.label_source == LABEL_FILE
    assert {CLASSES[r.label] for r in ds.records} == {"Grassland", "Barren"}  # class numbers 4 and 9 (1-based)
    (root / "sen12ms" / LABEL_FILE).write_text("ROIs1158_spring_s2_1_p10.tif 11\n")
    with pytest.raises(DataError, match="outside 1..10"):
        SEN12MS(root, split="train", sensor="s1")


def test_whole_regions_go_to_one_modality(root):
    data = load_dataset(dataset_config("sen12ms", root, image_size=16))
    assert data["s1"].class_names == data["s2"].class_names == CLASSES
    for kind in ("train", "test"):
        groups = [{sid.rsplit("_p", 1)[0] for sid in getattr(d, kind).scene_ids} for d in data.values()]
        assert groups[0] and groups[1] and not groups[0] & groups[1]
    assert data["s2"].train.images.shape[1:] == (13, 16, 16)
