"""The readers on the REAL samples in the shared data folder (EuroSAT MS, BigEarthNet v1 S1+S2).

The data root is FED_UML_DATA, else ../shared/data beside the checkout; the tests skip only
when that location is absent. Also checks that every dataset config composes with Hydra.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from fed_uml.data import available_datasets, load_dataset
from fed_uml.data.bigearthnet import CLASSES_19, BigEarthNet
from fed_uml.data.eurosat import CLASSES, MS_BANDS, EuroSAT
from tests.conftest import REPO, shared_data_root
from tests.fixtures.make_fixtures import dataset_config

ROOT = shared_data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="shared data folder absent (FED_UML_DATA or ../shared/data)")

NAMES = ("eurosat", "eurosat_ms", "bigearthnet", "bigearthnet_v2", "sen12ms")


@pytest.mark.parametrize("name", NAMES)
def test_configs_compose_and_are_registered(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dataset={name}", "seed=3"])
        first = cfg.dataset.modalities[0]
        one = compose(config_name="config", overrides=[f"dataset={name}", f"dataset.modalities=[{first}]"])
    assert cfg.dataset.name == name and cfg.dataset.seed == 3
    assert set(cfg.dataset.modalities) <= set(cfg.dataset.sensors)
    plain = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert plain["unpaired_among"] == plain["modalities"]
    assert OmegaConf.to_container(one.dataset, resolve=True)["unpaired_among"] == [first]
    assert name in available_datasets()


@needs_data
def test_eurosat_ms_as_ms():
    train, test = EuroSAT(ROOT, split="train"), EuroSAT(ROOT, split="test")
    assert len(train) == 216 and len(test) == 54
    assert Counter(CLASSES[r.label] for r in train.records)["Pasture"] == 16
    x = torch.stack([train[i]["image"] for i in range(0, 216, 24)])
    assert x.shape == (9, 13, 64, 64) and x.dtype == torch.float32
    assert 1 <= x.min() and x.max() <= 21668  # L1C digital numbers, as the README states
    band = x.mean(dim=(0, 2, 3))
    assert band[MS_BANDS.index("B10")] < 0.1 * band[MS_BANDS.index("B02")]  # cirrus band near 0
    with pytest.raises(Exception, match="eurosat-val.txt"):
        EuroSAT(ROOT, split="val")  # the sample has no validation split


@needs_data
def test_eurosat_ms_as_rgb():
    ds = EuroSAT(ROOT, split="test", bands=["B04", "B03", "B02"])
    s = ds[0]
    assert s["image"].shape == (3, 64, 64)
    full = EuroSAT(ROOT, split="test")[0]["image"]
    assert torch.equal(s["image"], full[[3, 2, 1]])


@needs_data
def test_eurosat_ms_loader_both_root_styles():
    by_parent = load_dataset(dataset_config("eurosat_ms", ROOT))
    by_folder = load_dataset(dataset_config("eurosat_ms", ROOT / "eurosat_ms"))
    for m in ("rgb", "nir_swir"):
        assert by_parent[m].train.scene_ids == by_folder[m].train.scene_ids
        assert by_parent[m].class_names == CLASSES
    rgb, nir = by_parent["rgb"], by_parent["nir_swir"]
    assert len(rgb.train) + len(nir.train) == 216 and len(rgb.test) + len(nir.test) == 54
    assert not set(rgb.train.scene_ids) & set(nir.train.scene_ids)
    assert not set(rgb.test.scene_ids) & set(nir.test.scene_ids)
    assert rgb.channels == 3 and nir.channels == 4


@needs_data
def test_bigearthnet_v1_as_s2():
    for split, n in (("train", 16), ("val", 10), ("test", 10)):
        ds = BigEarthNet(ROOT, split=split, sensor="s2")
        assert len(ds) == n
    ds = BigEarthNet(ROOT, split="train", sensor="s2")
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert images.shape == (16, 12, 120, 120)
    assert images.min() >= 0 and images.max() < 30000  # reflectance x 10000


@needs_data
def test_bigearthnet_v1_as_s1_and_labels():
    vv, vh, labels = [], [], Counter()
    for split in ("train", "val", "test"):
        s1 = BigEarthNet(ROOT, split=split, sensor="s1")
        s2 = BigEarthNet(ROOT, split=split, sensor="s2")
        assert [r.labels for r in s1.records] == [r.labels for r in s2.records]
        for r, r2 in zip(s1.records, s2.records):
            meta = json.loads((r.files["folder"] / f"{r.files['name']}_labels_metadata.json").read_text())
            assert meta["corresponding_s2_patch"] == r.scene == r2.scene
            labels.update(CLASSES_19[i] for i in r.labels)
        for i in range(len(s1)):
            x = s1[i]["image"]
            assert x.shape == (2, 120, 120)
            vv.append(x[0].mean())
            vh.append(x[1].mean())
    assert len(vv) == 36
    assert torch.stack(vv).mean().item() == pytest.approx(-13.5, abs=0.1)
    assert torch.stack(vh).mean().item() == pytest.approx(-20.2, abs=0.1)
    assert labels["Marine waters"] == 9 and labels["Mixed forest"] == 15 and labels["Inland wetlands"] == 3


@needs_data
def test_bigearthnet_loader_on_the_sample():
    data = load_dataset(dataset_config("bigearthnet", ROOT, task="single_label"))
    s1, s2 = data["s1"], data["s2"]
    assert s1.class_names == s2.class_names
    assert s1.channels == 2 and s2.channels == 12
    assert not set(s1.train.scene_ids) & set(s2.train.scene_ids)
    assert s2.info["label_rule"]["splits"]["train"]["s2"]["patches"] == 16
    # Paired, all single-label patches of train+val+test, no balancing: S1 and S2 of one pair.
    paired = load_dataset(dataset_config("bigearthnet", ROOT, task="single_label", unpaired=False,
                                         train_splits=["train", "val"], balanced={"undersample": False}))
    assert paired["s1"].train.scene_ids == paired["s2"].train.scene_ids
    assert len(paired["s2"].train) == 10  # 4 single-label patches in train, 6 in val


def test_no_machine_path_in_code():
    for f in (REPO / "fed_uml" / "data").rglob("*.py"):
        text = f.read_text()
        assert "/work/" not in text and "/home/" not in text, f
