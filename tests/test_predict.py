"""`python -m experiments.predict`: native files in, the in-memory model's predictions out (single-label:
softmax and the argmax; multi-label: sigmoid scores and label sets); bad inputs, input sizes, output paths
and model files that are not the ones their run recorded, each refused or reported in one line."""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from experiments.predict import main
from fed_uml.calibration import calibrate_modality
from fed_uml.data import load_dataset
from fed_uml.data.raster import read_tiff
from fed_uml.errors import UserError
from fed_uml.methods import build_model
from fed_uml.model_file import ModelFileError, load_model, save_model
from fed_uml.predict import Predictions, write_csv
from fed_uml.results import file_record
from tests.conftest import shared_data_root, tiny_config
from tests.fixtures.make_fixtures import (
    dataset_config,
    make_bigearthnet_v1,
    make_eurosat_ms,
    make_eurosat_rgb,
    make_sen12ms,
)

ROOT = shared_data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="shared data folder absent (FED_UML_DATA or ../shared/data)")


def _save(tmp_path, data, modality, dataset, **cfg_extra):
    """An (untrained, calibrated) h_k of `modality`, written to a model file."""
    cfg = {"seed": 0, "model": {"backbone": "small_cnn", "specific_layers": 1, "width": 4},
           "method": {"name": "uml"}, "dataset": {"name": dataset}, **cfg_extra}
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


def _assert_agrees(rows: list[dict], h, images, class_names, thresholds=None) -> None:
    """The CSV's predictions and probabilities are the in-memory model's on the loaded images:
    softmax and the argmax class, or (with `thresholds`, multi-label) the sigmoid of every class
    and the set of classes whose score reaches its threshold."""
    with torch.no_grad():
        logits = h(images)
    if thresholds is None:
        probs = torch.softmax(logits, dim=1)
        assert [r["predicted_class"] for r in rows] == [class_names[int(i)] for i in probs.argmax(1)]
    else:
        probs = torch.sigmoid(logits)
        sets = [{c for c, p, t in zip(class_names, row.tolist(), thresholds) if p >= t} for row in probs]
        assert [set(filter(None, r["predicted_labels"].split(";"))) for r in rows] == sets
        assert "predicted_class" not in rows[0]
    got = torch.tensor([[float(r[f"prob_{c}"]) for c in class_names] for r in rows])
    assert torch.allclose(got, probs, atol=2e-6)


def _fails(argv, capsys) -> str:
    """Run main(argv), which must stop on a user error: exit status 2 and ONE line `error: ...`."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("skipped ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


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
    assert d.train.labels.ndim == 2  # multi-label, BigEarthNet's default
    thresholds = (0.5,) * len(d.class_names)
    _assert_agrees([rows[str(f)] for f in folders], h, d.test.images, d.class_names, thresholds)

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
    _assert_agrees([rows[str(r.files["folder"])] for _, r in records], h, images, d.class_names, thresholds)


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
        line = _fails([path, s1[0], file, "--out", out, "--no-progress"], capsys)
        assert line.startswith(f"error: {file}: ") and re.search(message, line), (file, line)
    assert not out.exists()

    assert main([str(path), *map(str, s1), *map(str, bad), "--out", str(out), "--on-error", "skip",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert all(f"skipped {f}" in err for f in bad) and f"classified 2 of {2 + len(bad)} input(s)" in err
    with open(out, newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == [str(p) for p in s1]
    line = _fails([path, *bad, "--out", out, "--on-error", "skip", "--no-progress"], capsys)
    assert line == f"error: none of the {len(bad)} input(s) could be classified"
    line = _fails([five, s1[0], "--out", out], capsys)  # not a model file
    assert line.startswith(f"error: {five}: not a readable fed-uml model file")


# ------------------------------------------------------------------------ multi-label models


def _train_multi_label(root, tmp_path, modality="s2", **cfg_extra):
    """A tiny multi-label model (one epoch at 32 px) on BigEarthNet under `root`, saved: the
    deployed h_k, its data and the model file."""
    from fed_uml.calibration import calibrate
    from fed_uml.methods import train_settings
    from fed_uml.training import train_unpaired

    cfg = {**tiny_config(), "dataset": dataset_config("bigearthnet", root, image_size=32), **cfg_extra}
    data = load_dataset(cfg["dataset"])
    d = data[modality]
    torch.manual_seed(0)
    model = build_model(cfg["model"], {modality: d})
    train_unpaired(model, {modality: d.train}, train_settings(cfg), generator=torch.Generator().manual_seed(0))
    h = calibrate(model, {modality: d.train.images}, batch_size=16)[modality]
    return h, d, save_model(tmp_path / f"model-{modality}.pt", h, d, cfg)


def _band_folders(root, d):
    """The S2 band folders of the test patches of `d`."""
    return [root / "bigearthnet_v1" / "BigEarthNet-v1.0" / s for s in d.test.scene_ids]


def _check_multi_label_served_as_such(root, tmp_path):
    h, d, path = _train_multi_label(root, tmp_path)
    folders = _band_folders(root, d)
    rows = _predict(path, folders, tmp_path)
    thresholds = (0.5,) * len(d.class_names)  # decision.thresholds=fixed, the default
    _assert_agrees([rows[str(f)] for f in folders], h, d.test.images, d.class_names, thresholds)

    # several labels where the logits say so: the last layer set to give every patch the logits
    # +3 for three classes and -3 for the others, whatever its pixels
    linear = [m for m in h.modules() if isinstance(m, nn.Linear)][-1]
    chosen = [0, 2, 8]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(-3.0)
        linear.bias[chosen] = 3.0
    path = save_model(tmp_path / "several" / "model-s2.pt", h, d, {**tiny_config(), "dataset": {"name": "bigearthnet"}})
    rows = _predict(path, folders, tmp_path)
    _assert_agrees([rows[str(f)] for f in folders], h, d.test.images, d.class_names, thresholds)
    expected = ";".join(d.class_names[c] for c in chosen)
    assert all(rows[str(f)]["predicted_labels"] == expected for f in folders)
    p = float(torch.sigmoid(torch.tensor(3.0)))
    assert all(float(rows[str(f)][f"prob_{d.class_names[0]}"]) == pytest.approx(p, abs=1e-6) for f in folders)


def test_multi_label_model_is_served_as_multi_label(tmp_path):
    make_bigearthnet_v1(tmp_path / "data")
    _check_multi_label_served_as_such(tmp_path / "data", tmp_path)


@needs_data
def test_multi_label_model_on_the_shared_bigearthnet_sample(tmp_path):
    _check_multi_label_served_as_such(ROOT, tmp_path)


def test_tuned_thresholds_decide_the_label_sets(tmp_path):
    make_bigearthnet_v1(tmp_path / "data")
    h, d, path = _train_multi_label(tmp_path / "data", tmp_path,
                                    decision={"threshold": 0.5, "thresholds": "tuned"})
    thresholds = load_model(path).thresholds
    assert thresholds != (0.5,) * len(d.class_names)
    folders = _band_folders(tmp_path / "data", d)
    rows = _predict(path, folders, tmp_path)
    _assert_agrees([rows[str(f)] for f in folders], h, d.test.images, d.class_names, thresholds)


# ------------------------------------------------------------------------ input size


def test_inputs_of_another_patch_size_are_refused_unless_resize(tmp_path, capsys):
    root = tmp_path / "data"
    make_eurosat_ms(root, per_class_train=1, per_class_test=1)
    make_bigearthnet_v1(root)
    # trained at 32 px on EuroSAT's 64 px tiles: 64 px tiles are what it takes (resampled as in training)
    data = load_dataset(dataset_config("eurosat_ms", root, image_size=32))
    path, h = _save(tmp_path, data, "nir_swir", "eurosat_ms")
    tiles = sorted((root / "eurosat_ms").rglob("*.tif"))[:2]
    assert len(_predict(path, tiles, tmp_path)) == 2
    capsys.readouterr()

    tiny = tmp_path / "tiny.tif"  # a 1 x 1 px 13-band tile
    tifffile.imwrite(tiny, np.full((1, 1, 13), 1000, np.uint16), photometric="minisblack", planarconfig="contig")
    at_32 = tmp_path / "at32.tif"  # the model's bands at its input size, but not at EuroSAT's pixel size
    tifffile.imwrite(at_32, np.full((4, 32, 32), 1000, np.uint16), photometric="minisblack")
    for file, size in ((tiny, "1 x 1"), (at_32, "32 x 32")):
        line = _fails([path, file, "--out", tmp_path / "p.csv"], capsys)
        assert line == (f"error: {file}: is {size} pixels, but the model was trained on 64 x 64 px patches "
                        "(EuroSAT MS): a patch of another size covers another area or has another pixel size. "
                        "Pass --resize to resample it to the model's input anyway")
    rows = _predict(path, [tiny, at_32], tmp_path, "--resize")
    assert list(rows) == [str(tiny), str(at_32)]
    capsys.readouterr()
    assert load_model(path).input_size == (64, 64)

    # a model trained on 120 px BigEarthNet patches takes a band folder (its 20 m and 60 m band
    # files at 60 and 20 px are part of one 120 px patch); a synthetic 16 px model does not
    ben = load_dataset(dataset_config("bigearthnet", root, image_size=32))
    ben_path, _ = _save(tmp_path / "ben", ben, "s2", "bigearthnet")
    folder = sorted((root / "bigearthnet_v1" / "BigEarthNet-v1.0").iterdir())[0]
    assert len(_predict(ben_path, [folder], tmp_path)) == 1
    capsys.readouterr()
    syn = load_dataset(tiny_config(modalities=("rgb",))["dataset"])
    syn_path, _ = _save(tmp_path / "syn", syn, "rgb", "synthetic")
    line = _fails([syn_path, folder, "--out", tmp_path / "p.csv"], capsys)
    assert "a BigEarthNet band folder, a patch of 120 x 120 pixels, but the model was trained on 16 x 16 px" in line


# ------------------------------------------------------------------------ output path and CSV


def test_a_bad_output_path_is_refused_before_any_input_is_read(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    make_sen12ms(root)
    data = load_dataset(dataset_config("sen12ms", root, image_size=32, modalities=["s1"]))
    path, _ = _save(tmp_path, data, "s1", "sen12ms")
    s1 = sorted((root / "sen12ms").rglob("*_s1_*.tif"))[:2]

    def never(*_a, **_k):
        raise AssertionError("an input was read before the output path was checked")

    monkeypatch.setattr("fed_uml.predict.read_input", never)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cases = {
        tmp_path: "is a folder; give a file name",
        a_file / "p.csv": f"{a_file} is not a folder",
        path: "is the model file; it would be overwritten",
        s1[1]: "is an input; it would be overwritten",
        fifo: "exists and is not a regular file",
    }
    for out, message in cases.items():
        line = _fails([path, *s1, "--out", out], capsys)
        assert line.startswith(f"error: --out {out}: ") and message in line, line
    assert a_file.read_text() == "x" and path.is_file()


def test_the_csv_is_written_atomically(tmp_path):
    root = tmp_path / "data"
    make_sen12ms(root)
    data = load_dataset(dataset_config("sen12ms", root, image_size=32, modalities=["s1"]))
    path, _ = _save(tmp_path, data, "s1", "sen12ms")
    saved = load_model(path)
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    out.write_text("the previous predictions\n")
    # a failure half-way through the rows (here a malformed second row) leaves the old file whole
    broken = Predictions(files=["a.tif", "b.tif"], probabilities=[torch.full((10,), 0.1), "not a tensor"])
    with pytest.raises((TypeError, AttributeError)):
        write_csv(out, saved, broken)
    assert out.read_text() == "the previous predictions\n"
    assert [p.name for p in out.parent.iterdir()] == ["p.csv"]  # no temporary file left
    write_csv(out, saved, Predictions(files=["a.tif"], probabilities=[torch.full((10,), 0.1)]))
    assert out.read_text().splitlines()[1].startswith("a.tif,Forest,0.100000")


# ------------------------------------------------------------------------ the run's recorded SHA-256


def test_a_model_file_other_than_its_run_recorded_is_reported(tmp_path, capsys):
    root = tmp_path / "data"
    make_sen12ms(root)
    data = load_dataset(dataset_config("sen12ms", root, image_size=32, modalities=["s1"]))
    run = tmp_path / "run"
    path, _ = _save(run, data, "s1", "sen12ms")
    scene = sorted((root / "sen12ms").rglob("*_s1_*.tif"))[0]
    out = tmp_path / "p.csv"
    results = run / "results.json"

    def predict_ok(*extra) -> str:
        assert main([str(path), str(scene), "--out", str(out), "--no-progress", *extra]) == 0
        return capsys.readouterr().err

    results.write_text(json.dumps({"files": {"model-s1.pt": {"sha256": "0" * 64, "bytes": 1}}}))
    err = predict_ok()  # another file than the one the run wrote (and recorded)
    assert f"warning: {path}: its SHA-256 " in err and f"is not the one {results} recorded for it ({'0' * 64})" in err
    out.unlink()
    line = _fails([path, scene, "--out", out, "--require-recorded"], capsys)
    assert line.startswith(f"error: {path}: its SHA-256 ") and line.endswith("(--require-recorded)")
    assert not out.exists()

    results.write_text(json.dumps({"files": file_record(run, [path])}))  # as the run recorded it
    assert "warning" not in predict_ok("--require-recorded")

    results.unlink()
    assert "warning" not in predict_ok()  # no results.json near the file: nothing to compare with
    line = _fails([path, scene, "--out", out, "--require-recorded"], capsys)
    assert line.startswith(f"error: {path}: no results.json") and line.endswith("(--require-recorded)")

    results.write_text(json.dumps({"files": {"model-s2.pt": {"sha256": "1" * 64, "bytes": 1}}}))
    assert f"warning: {path}: {results} does not list it among the files its run wrote" in predict_ok()
    results.write_text(json.dumps({"method": "uml"}))  # a run from before results listed their files
    assert f"warning: {path}: {results} records no file digests" in predict_ok()


# ------------------------------------------------------------------------ user errors


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "model-sar.pt"
    assert _fails([missing, "x.tif"], capsys) == f"error: {missing}: model file not found"
    assert _fails([missing], capsys) == "error: give at least one INPUT (or --export-program PATH)"
    with pytest.raises(ModelFileError, match="model file not found"):
        main([str(missing), "x.tif", "--debug"])
    assert issubclass(ModelFileError, UserError)
