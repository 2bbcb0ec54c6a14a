"""`python -m experiments.predict`: native files in, the in-memory model's predictions out; bad inputs named."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch

from experiments.predict import main
from fed_uml.calibration import calibrate_modality
from fed_uml.data import load_dataset
from fed_uml.data.raster import read_tiff
from fed_uml.methods import build_model
from fed_uml.model_file import save_model
from tests.conftest import shared_data_root
from tests.fixtures.make_fixtures import dataset_config, make_eurosat_ms, make_eurosat_rgb, make_sen12ms

ROOT = shared_data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="shared data folder absent (FED_UML_DATA or ../shared/data)")


def _save(tmp_path, data, modality, dataset):
    """An (untrained, calibrated) h_k of `modality`, written to a model file."""
    cfg = {"seed": 0, "model": {"backbone": "small_cnn", "specific_layers": 1, "width": 4},
           "method": {"name": "uml"}, "dataset": {"name": dataset}}
    d = data[modality]
    torch.manual_seed(0)
    model = build_model(cfg["model"], {modality: d})
    h = calibrate_modality(model.projection(modality), model.backbone, d.train.images, batch_size=16,
                           modality=modality)
    return save_model(tmp_path / f"model-{modality}.pt", h, d, cfg), h


def _predict(model_path, inputs, tmp_path, *extra) -> dict[str, dict]:
    out = tmp_path / "predictions.csv"
    assert main([str(model_path), *map(str, inputs), "--out", str(out), "--no-progress", *extra]) == 0
    with open(out, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def _assert_agrees(rows: list[dict], h, images, class_names) -> None:
    """The CSV's predictions and probabilities are the in-memory model's on the loaded images."""
    with torch.no_grad():
        probs = torch.softmax(h(images), dim=1)
    assert [r["predicted_class"] for r in rows] == [class_names[int(i)] for i in probs.argmax(1)]
    got = torch.tensor([[float(r[f"prob_{c}"]) for c in class_names] for r in rows])
    assert torch.allclose(got, probs, atol=2e-6)


@needs_data
def test_eurosat_sample_folder_and_plain_geotiff(tmp_path):
    data = load_dataset(dataset_config("eurosat_ms", ROOT))
    d = data["nir_swir"]
    path, h = _save(tmp_path, data, "nir_swir", "eurosat_ms")
    rows = _predict(path, [ROOT / "eurosat_ms"], tmp_path)  # the folder, searched recursively
    assert len(rows) == 270
    files = [str(ROOT / "eurosat_ms" / s.rsplit("_", 1)[0] / f"{s}.tif") for s in d.test.scene_ids]
    _assert_agrees([rows[f] for f in files], h, d.test.images, d.class_names)

    # a plain GeoTIFF holding exactly the model's bands, in its order, is read as such
    import tifffile

    index = [("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A").index(b)
             for b in ("B08", "B8A", "B11", "B12")]
    plain = []
    for i, f in enumerate(files[:3]):
        plain.append(tmp_path / "plain" / f"scene{i}.tif")
        plain[-1].parent.mkdir(exist_ok=True)
        tifffile.imwrite(plain[-1], read_tiff(f)[index].astype(np.uint16), photometric="minisblack")
    prows = _predict(path, plain, tmp_path)
    _assert_agrees([prows[str(p)] for p in plain], h, d.test.images[:3], d.class_names)


@needs_data
@pytest.mark.parametrize("modality", ["s1", "s2"])
def test_bigearthnet_sample_band_folders(tmp_path, modality):
    data = load_dataset(dataset_config("bigearthnet", ROOT))
    d = data[modality]
    path, h = _save(tmp_path, data, modality, "bigearthnet")
    root = ROOT / "bigearthnet_v1"
    s1_of = dict(line.strip().split(",") for line in (root / "bigearthnet-test.csv").read_text().splitlines()
                 if line.strip())
    folders = [root / "BigEarthNet-S1-v1.0" / s1_of[s] if modality == "s1" else root / "BigEarthNet-v1.0" / s
               for s in d.test.scene_ids]
    rows = _predict(path, folders, tmp_path)
    _assert_agrees([rows[str(f)] for f in folders], h, d.test.images, d.class_names)

    # every patch of the sample (not only the single-label ones the data set keeps), read by the
    # BigEarthNet reader itself and normalised with the modality's statistics
    from fed_uml.data.bigearthnet import BigEarthNet
    from fed_uml.data.normalize import normalize

    records = [(ds, r) for split in ("train", "val", "test")
               for ds in [BigEarthNet(ROOT, split=split, sensor=modality, bands=d.band_names, image_size=120)]
               for r in ds.records]
    raw = torch.from_numpy(np.stack([ds.load(r) for ds, r in records]))
    images = normalize(raw, torch.tensor(d.info["band_mean"]), torch.tensor(d.info["band_std"]))
    rows = _predict(path, [root], tmp_path, "--on-error", "skip")  # the whole folder: other sensor skipped
    assert len(records) == len(rows) == 36
    _assert_agrees([rows[str(r.files["folder"])] for _, r in records], h, images, d.class_names)


def test_sen12ms_patches_and_eurosat_rgb_jpegs(tmp_path):
    root = tmp_path / "data"
    make_sen12ms(root)
    make_eurosat_rgb(root)
    data = load_dataset(dataset_config("sen12ms", root, image_size=32))
    for m in ("s1", "s2"):
        path, h = _save(tmp_path, data, m, "sen12ms")
        files = []
        for sid in data[m].test.scene_ids:
            season, scene, patch = re.fullmatch(r"(ROIs\d+_[a-z]+)_(\d+)_p(\d+)", sid).groups()
            files.append(root / "sen12ms" / season / f"{m}_{scene}" / f"{season}_{m}_{scene}_p{patch}.tif")
        rows = _predict(path, files, tmp_path)
        _assert_agrees([rows[str(f)] for f in files], h, data[m].test.images, data[m].class_names)

    rgb = load_dataset(dataset_config("eurosat", root, modalities=["rgb"]))
    path, h = _save(tmp_path, rgb, "rgb", "eurosat")
    files = [root / "eurosat_rgb" / "2750" / s.rsplit("_", 1)[0] / f"{s}.jpg" for s in rgb["rgb"].test.scene_ids]
    rows = _predict(path, files, tmp_path)
    _assert_agrees([rows[str(f)] for f in files], h, rgb["rgb"].test.images, rgb["rgb"].class_names)


def test_bad_inputs_are_named_and_can_be_skipped(tmp_path, capsys):
    import tifffile

    root = tmp_path / "data"
    make_sen12ms(root)
    make_eurosat_ms(root, per_class_train=1, per_class_test=0)
    make_eurosat_rgb(root, per_class_train=1, per_class_test=0)
    data = load_dataset(dataset_config("sen12ms", root, image_size=32, modalities=["s1"]))
    path, _ = _save(tmp_path, data, "s1", "sen12ms")
    s1 = sorted((root / "sen12ms").rglob("*_s1_*.tif"))[:2]
    five = tmp_path / "five.tif"
    tifffile.imwrite(five, np.zeros((5, 32, 32), np.float32), photometric="minisblack")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 20)
    bad = {
        five: "expected 2 band\\(s\\) \\(VV, VH, the model's order\\) or a 13-band EuroSAT MS tile, found 5",
        sorted((root / "sen12ms").rglob("*_s2_*.tif"))[0]: "SEN12MS s2 patch .*wrong modality",
        sorted((root / "eurosat_ms").rglob("*.tif"))[0]: "13-band EuroSAT MS tile .*wrong modality",
        sorted((root / "eurosat_rgb").rglob("*.jpg"))[0]: "8-bit JPG image",
        broken: "cannot read TIFF",
        tmp_path / "absent.tif": "file not found",
        root / "sen12ms" / "train_list.txt": "unsupported file type",
    }
    out = tmp_path / "p.csv"
    for file, message in bad.items():
        assert main([str(path), str(s1[0]), str(file), "--out", str(out), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert str(file) in err and re.search(message, err), (file, err)

    assert main([str(path), *map(str, s1), *map(str, bad), "--out", str(out), "--on-error", "skip",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert all(f"skipped {f}" in err for f in bad) and f"classified 2 of {2 + len(bad)} input(s)" in err
    with open(out, newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == [str(p) for p in s1]
    assert main([str(path), *map(str, bad), "--out", str(out), "--on-error", "skip", "--no-progress"]) == 1
    assert "none of the" in capsys.readouterr().err
    assert main([str(five), str(s1[0]), "--out", str(out)]) == 1  # not a model file
    assert f"{five}: not a readable fed-uml model file" in capsys.readouterr().err
