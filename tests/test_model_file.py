"""The model file of h_k (`fed_uml.model_file`): written, reloaded bit-identically, refused when it does not fit."""

from __future__ import annotations

import json

import pytest
import torch

from fed_uml.calibration import calibrate
from fed_uml.centralized import run_centralized
from fed_uml.data import load_dataset
from fed_uml.methods import build_model
from fed_uml.model_file import (
    FORMAT,
    FORMAT_VERSION,
    SERVING_METADATA,
    ModelFileError,
    export_program,
    load_model,
    save_model,
)
from fed_uml.training import evaluate
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained():
    """A tiny UML model (one short epoch), its data and its calibrated h_k per modality."""
    from fed_uml.methods import train_settings
    from fed_uml.training import train_unpaired

    torch.set_num_threads(1)
    cfg = tiny_config()
    data = load_dataset(cfg["dataset"])
    torch.manual_seed(0)
    model = build_model(cfg["model"], data)
    train_unpaired(model, {k: d.train for k, d in data.items()}, train_settings(cfg),
                   generator=torch.Generator().manual_seed(0))
    h = calibrate(model, {k: d.train.images for k, d in data.items()}, batch_size=16)
    return cfg, data, h


def test_saved_model_reloads_bit_identical(trained, tmp_path):
    cfg, data, h = trained
    path = save_model(tmp_path / "model-sar.pt", h["sar"], data["sar"], cfg)
    saved = load_model(path)
    x = data["sar"].test.images
    with torch.no_grad():
        expected = h["sar"](x)
    assert torch.equal(saved.logits(x, normalized=True), expected)
    for a, b in zip(saved.model.state_dict().values(), h["sar"].state_dict().values()):
        assert torch.equal(a, b)
    assert saved.modality == "sar" and saved.bands == ("VV", "VH") and saved.image_size == (16, 16)
    assert saved.class_names == data["sar"].class_names and saved.calibrated
    assert saved.band_mean.tolist() == pytest.approx(data["sar"].info["band_mean"], abs=0)
    # normalising raw images with the file's statistics reproduces the training inputs exactly
    raw = x * saved.band_std.view(1, -1, 1, 1) + saved.band_mean.view(1, -1, 1, 1)
    assert torch.allclose(saved.normalize(raw), x, atol=1e-5)

    # plain tensors and metadata only: loadable with weights_only=True, every documented key present
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["format_version"] == FORMAT_VERSION
    assert {"fed_uml_version", "modality", "bands", "band_mean", "band_std", "image_size", "class_names",
            "architecture", "calibrated", "source", "settings", "settings_digest", "state_dict",
            "digest"} <= set(payload)
    assert payload["architecture"]["backbone"] == "small_cnn" and payload["architecture"]["kwargs"] == {"width": 8}
    assert json.loads(payload["settings"])["model"]["width"] == 8
    assert all(k.startswith(("projection.", "backbone.")) for k in payload["state_dict"])


def _rewrite(path, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_load_refuses_files_that_do_not_fit(trained, tmp_path):
    cfg, data, h = trained
    path = save_model(tmp_path / "model-rgb.pt", h["rgb"], data["rgb"], cfg)
    good = path.read_bytes()

    def refused(match, **kw):
        with pytest.raises(ModelFileError, match=match) as err:
            load_model(path, **kw)
        assert str(path) in str(err.value)

    refused("modality 'rgb'.*not 'sar'", modality="sar")
    refused("bands B04, B03, B02 .*not B02, B03, B04", bands=("B02", "B03", "B04"))
    _rewrite(path, format_version=FORMAT_VERSION + 1)
    refused("format version 2 .*reads version 1")
    path.write_bytes(good)
    _rewrite(path, bands=["B02", "B03", "B04"])  # edited metadata
    refused("digest mismatch")
    path.write_bytes(good)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"][next(iter(payload["state_dict"]))] += 1.0  # edited weights
    torch.save(payload, path)
    refused("digest mismatch")
    path.write_bytes(good[: len(good) // 2])  # truncated
    refused("not a readable fed-uml model file")
    torch.save({"backbone.0.weight": torch.zeros(2)}, path)  # a backbone.pt, not a model file
    refused("not a fed-uml model file.*backbone.pt")
    path.write_bytes(good)
    assert load_model(path, modality="rgb", bands=("B04", "B03", "B02")).modality == "rgb"
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "absent.pt")


def test_exported_program_gives_the_same_logits(trained, tmp_path):
    cfg, data, h = trained
    saved = load_model(save_model(tmp_path / "model-rgb.pt", h["rgb"], data["rgb"], cfg))
    out = export_program(saved, tmp_path / "model-rgb.pt2")
    extra = {SERVING_METADATA: ""}
    program = torch.export.load(out, extra_files=extra).module()  # PyTorch alone, no fed-uml class
    meta = json.loads(extra[SERVING_METADATA])
    assert meta["bands"] == ["B04", "B03", "B02"] and meta["class_names"] == list(saved.class_names)
    raw = torch.rand(5, 3, 16, 16) * 3000
    assert torch.allclose(program(raw), saved.logits(raw), atol=1e-5)
    assert torch.equal(program(raw).argmax(1), saved.logits(raw).argmax(1))
    assert program(raw[:1]).shape == (1, 10)


@pytest.mark.parametrize("method", ["uml", "unimodal"])
def test_centralized_run_writes_one_model_per_modality(tmp_path, method):
    results = run_centralized(tiny_config(method=method), tmp_path)
    data = load_dataset(tiny_config()["dataset"])
    for k in ("sar", "rgb"):
        saved = load_model(tmp_path / f"model-{k}.pt", modality=k)
        # the deployed model: calibrated for UML, as trained for the unimodal baseline
        assert saved.calibrated is (method == "uml") and saved.source["method"] == method
        assert evaluate(saved.model, data[k].test) == pytest.approx(results["modalities"][k]["accuracy"], abs=1e-6)
    assert sorted(p.name for p in tmp_path.glob("model-*.pt")) == ["model-rgb.pt", "model-sar.pt"]


def test_no_results_dir_writes_no_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_centralized(tiny_config())
    assert not list(tmp_path.rglob("model-*.pt"))
