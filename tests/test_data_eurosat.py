"""EuroSAT MS / RGB / SAR readers and the `eurosat`, `eurosat_ms` loaders, on generated fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from fed_uml.centralized import run_centralized
from fed_uml.data import load_dataset
from fed_uml.data.eurosat import CLASSES, MS_BANDS, EuroSAT, EuroSATRGB
from fed_uml.data.eurosat_sar import EuroSATSAR
from tests.fixtures.make_fixtures import (
    dataset_config,
    make_eurosat_ms,
    make_eurosat_rgb,
    make_eurosat_sar,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("eurosat")
    make_eurosat_ms(r)
    make_eurosat_rgb(r)
    make_eurosat_sar(r)
    return r


def test_ms_sample_is_physical_units_in_file_band_order(root):
    ds = EuroSAT(root, split="train")
    assert len(ds) == 20
    s = ds[0]
    assert set(s) == {"image", "label", "scene"}
    assert s["image"].dtype == torch.float32 and s["image"].shape == (13, 64, 64)
    raw = tifffile.imread(root / "eurosat_ms" / CLASSES[s["label"]] / f"{s['scene']}.tif")
    assert np.array_equal(s["image"].numpy(), raw.transpose(2, 0, 1).astype(np.float32))
    assert s["scene"].startswith(CLASSES[s["label"]] + "_")


def test_band_selection_and_resampling(root):
    full = EuroSAT(root, split="test")[3]["image"]
    rgb = EuroSAT(root, split="test", bands=["B04", "B03", "B02"])[3]["image"]
    idx = [MS_BANDS.index(b) for b in ("B04", "B03", "B02")]
    assert torch.equal(rgb, full[idx])
    small = EuroSAT(root, split="test", bands=["B08"], image_size=32)[3]["image"]
    assert small.shape == (1, 32, 32)
    assert small.mean().item() == pytest.approx(full[MS_BANDS.index("B08")].mean().item(), rel=0.01)
    with pytest.raises(ValueError, match="unknown band"):
        EuroSAT(root, bands=["B13"])


def test_rgb_jpegs_and_sar_with_borrowed_split_files(root):
    rgb = EuroSATRGB(root, split="train")
    s = rgb[0]
    assert s["image"].shape == (3, 64, 64) and 0 <= s["image"].min() and s["image"].max() <= 255
    sar = EuroSATSAR(root, split="test")  # eurosat_sar has no split files: uses eurosat_ms's
    assert [r.scene for r in sar.records] == [r.scene for r in EuroSAT(root, split="test").records]
    x = sar[0]["image"]
    assert x.shape == (2, 64, 64) and x.max() < 0  # dB backscatter
    assert x[0].mean() > x[1].mean()  # VV brighter than VH


def test_eurosat_loader_sar_vs_rgb_disjoint_and_normalised(root):
    data = load_dataset(dataset_config("eurosat", root))
    assert set(data) == {"sar", "rgb"}
    assert data["sar"].class_names == data["rgb"].class_names == CLASSES
    for kind in ("train", "test"):
        a = set(getattr(data["sar"], kind).scene_ids)
        b = set(getattr(data["rgb"], kind).scene_ids)
        assert a and b and not a & b
    x = data["rgb"].train.images
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    info = data["sar"].info
    assert info["sensor"] == "sar" and info["bands"] == ["VV", "VH"] and info["band_mean"][0] < 0
    assert sum(info["class_counts"]["train"].values()) == len(data["sar"].train)
    assert info["skipped"]["count"] == 0


def test_samples_per_class_map_and_seed(root):
    cfg = dataset_config("eurosat_ms", root, samples_per_class={"rgb": 1, "nir_swir": 1}, test_samples_per_class=1)
    one = load_dataset(cfg)
    for d in one.values():
        assert max(d.info["class_counts"]["train"].values()) == 1
        assert len(d.train) == 10 and d.channels in (3, 4)
    again = load_dataset(cfg)
    assert one["rgb"].train.scene_ids == again["rgb"].train.scene_ids
    other = load_dataset({**cfg, "seed": 7})
    assert one["rgb"].train.scene_ids != other["rgb"].train.scene_ids


def test_paired_mode_and_root_pointing_at_the_data_set_folder(root):
    paired = load_dataset(dataset_config("eurosat_ms", root / "eurosat_ms", unpaired=False))
    assert paired["rgb"].train.scene_ids == paired["nir_swir"].train.scene_ids
    with pytest.raises(ValueError, match="sensors.bad.sensor"):
        load_dataset(dataset_config("eurosat_ms", root, modalities=["bad"], sensors={"bad": {"sensor": "x"}}))


def test_classes_setting_restricts_the_label_set(root):
    data = load_dataset(dataset_config("eurosat_ms", root, classes=["Forest", "SeaLake"], num_classes=2))
    assert data["rgb"].class_names == ("Forest", "SeaLake")
    with pytest.raises(ValueError, match="num_classes=10, but the label set has 2"):
        load_dataset(dataset_config("eurosat_ms", root, classes=["Forest", "SeaLake"]))
    assert set(data["rgb"].train.labels.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="unknown class"):
        load_dataset(dataset_config("eurosat_ms", root, classes=["Desert"]))


def test_trains_end_to_end(root):
    from fed_uml.federated.config import compose_config
    from tests.conftest import TINY_SETTINGS

    cfg = compose_config(["dataset=eurosat_ms"], {**TINY_SETTINGS, "dataset.root": str(root), "dataset.image_size": 16,
                                                  "training.epochs": 1})
    res = run_centralized(cfg)
    assert set(res["modalities"]) == {"rgb", "nir_swir"}
    assert 0.0 <= res["mean_accuracy"] <= 1.0


def test_one_modality_alone_gets_the_scenes_of_the_joint_deal(root):
    """A federated institution loads only its modality; the deal must not change."""
    joint = load_dataset(dataset_config("eurosat", root, samples_per_class=1))
    alone = dataset_config("eurosat", root, samples_per_class=1)
    alone["modalities"] = ["rgb"]  # what the institution does, after Hydra resolved the config
    rgb = load_dataset(alone)["rgb"]
    assert rgb.train.scene_ids == joint["rgb"].train.scene_ids
    assert rgb.test.scene_ids == joint["rgb"].test.scene_ids
    assert torch.equal(rgb.train.images, joint["rgb"].train.images)
    with pytest.raises(ValueError, match="unpaired_among"):
        load_dataset({**alone, "modalities": ["ms"]})
