"""BigEarthNet v1 and v2 (reBEN) readers, the 43 -> 19 mapping and the balanced single-label set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from fed_uml.data import load_dataset
from fed_uml.data.bigearthnet import (
    CLASSES_19,
    CLASSES_43,
    LABEL_43_TO_19,
    S2_BANDS,
    BigEarthNet,
    labels_19,
)
from fed_uml.data.bigearthnet_v2 import BigEarthNetV2
from fed_uml.data.errors import DataError
from fed_uml.data.splits import write_class_counts
from tests.fixtures.make_fixtures import (
    dataset_config,
    make_bigearthnet_v1,
    make_bigearthnet_v2,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("ben")
    make_bigearthnet_v1(r)
    make_bigearthnet_v2(r)
    return r


def test_43_to_19_mapping():
    assert len(LABEL_43_TO_19) == 32 and set(LABEL_43_TO_19) <= set(CLASSES_43)
    assert set(LABEL_43_TO_19.values()) == set(CLASSES_19)
    assert labels_19(["Peatbogs", "Inland marshes"], "x") == (CLASSES_19.index("Inland wetlands"),)
    assert labels_19(["Road and rail networks and associated land", "Airports"], "x") == ()
    assert labels_19(["Sea and ocean", "Estuaries", "Coastal lagoons"], "x") == (CLASSES_19.index("Marine waters"),)
    with pytest.raises(DataError, match="unknown BigEarthNet label 'Moon'"):
        labels_19(["Moon"], "some.json")


def test_s2_bands_are_resampled_onto_the_10m_grid(root):
    ds = BigEarthNet(root, split="train", sensor="s2")
    s = ds[0]
    assert s["image"].shape == (12, 120, 120) and s["image"].dtype == torch.float32
    rec = ds.records[0]
    b02 = tifffile.imread(rec.files["folder"] / f"{rec.files['name']}_B02.tif")
    assert np.array_equal(s["image"][S2_BANDS.index("B02")].numpy(), b02.astype(np.float32))
    b01 = tifffile.imread(rec.files["folder"] / f"{rec.files['name']}_B01.tif")
    assert b01.shape == (20, 20)
    assert s["image"][0].mean().item() == pytest.approx(float(b01.mean()), rel=0.02)
    small = BigEarthNet(root, split="train", sensor="s2", bands=["B04", "B03", "B02"], image_size=60)[0]["image"]
    assert small.shape == (3, 60, 60)


def test_s1_records_share_the_s2_scene_id(root):
    s1 = BigEarthNet(root, split="test", sensor="s1")
    s2 = BigEarthNet(root, split="test", sensor="s2")
    assert [r.scene for r in s1.records] == [r.scene for r in s2.records]
    assert [r.labels for r in s1.records] == [r.labels for r in s2.records]
    x = s1[0]["image"]
    assert x.shape == (2, 120, 120) and x.mean() < 0


def test_balanced_single_label_set(root):
    data = load_dataset(dataset_config("bigearthnet", root, task="single_label"))
    s1, s2 = data["s1"], data["s2"]
    assert s1.class_names == s2.class_names == ("Arable land", "Pastures", "Coniferous forest", "Marine waters")
    rule = s1.info["label_rule"]
    assert rule["rule"] == "exactly_one"
    assert rule["splits"]["train"]["s2"]["patches"] == 14
    assert rule["splits"]["train"]["s2"]["single_label"] == 12  # incl. Pastures + an unmapped label
    assert rule["splits"]["train"]["s2"]["multi_label"] == 2
    assert "Mixed forest" in rule["dropped_classes"]
    for d in data.values():
        for kind in ("train", "test"):
            counts = [n for n in d.info["class_counts"][kind].values() if n]
            assert len(set(counts)) == 1  # undersampled to the smallest class
    for kind in ("train", "test"):
        assert not set(getattr(s1, kind).scene_ids) & set(getattr(s2, kind).scene_ids)


def test_min_per_class_and_counts_file(root, tmp_path):
    data = load_dataset(dataset_config("bigearthnet", root, task="single_label",
                                       balanced={"min_per_class": 4, "undersample": False}))
    assert data["s1"].class_names == ("Coniferous forest", "Marine waters")
    path = write_class_counts(data, tmp_path / "counts.json")
    saved = json.loads(path.read_text())
    assert saved["s2"]["class_counts"] == data["s2"].info["class_counts"]
    assert saved["s2"]["label_rule"]["dropped_classes"][:2] == ["Urban fabric", "Industrial or commercial units"]


def test_reben_metadata_layout(root):
    ds = BigEarthNetV2(root, split="val", sensor="s2")  # 'validation' in the parquet
    assert len(ds) == 1 and ds.records[0].labels == (CLASSES_19.index("Coniferous forest"),)
    s1 = BigEarthNetV2(root, split="train", sensor="s1")
    assert s1[0]["image"].shape == (2, 120, 120)
    rec = s1.records[0]
    assert rec.scene == rec.files["s2"] and rec.files["name"] == rec.files["s1"]  # S1 keyed by the S2 id
    data = load_dataset(dataset_config("bigearthnet_v2", root, image_size=32, task="single_label",
                                       train_splits=["train", "val"]))
    assert data["s2"].class_names == ("Coniferous forest", "Marine waters")
    assert data["s2"].train.images.shape[1:] == (12, 32, 32)
    assert not set(data["s1"].train.scene_ids) & set(data["s2"].train.scene_ids)
