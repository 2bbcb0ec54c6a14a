"""The model file of h_k (`fed_uml.model_file`): written, reloaded bit-identically, refused when it does not fit;
its task (single- or multi-label) and decision thresholds; version-1 files; fields that contradict each other."""

from __future__ import annotations

import json

import pytest
import torch

from fed_uml.calibration import calibrate
from fed_uml.centralized import run_centralized
from fed_uml.data import load_dataset
from fed_uml.methods import build_model
from fed_uml.metrics import tune_thresholds
from fed_uml.model_file import (
    FORMAT,
    FORMAT_VERSION,
    SERVING_METADATA,
    ModelFileError,
    _digest,
    _sha256,
    export_program,
    load_model,
    save_model,
    upgrade_model_file,
)
from fed_uml.training import evaluate
from tests.conftest import tiny_config
from tests.fixtures.make_fixtures import dataset_config, make_bigearthnet_v1


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
    assert {"fed_uml_version", "modality", "bands", "band_mean", "band_std", "image_size", "native_size",
            "class_names", "task", "thresholds", "thresholds_chosen", "architecture", "calibrated", "source",
            "settings", "settings_digest", "state_dict", "digest"} <= set(payload)
    assert payload["task"] == "single_label" and payload["thresholds"] is None
    assert payload["native_size"] == [16, 16]  # synthetic scenes are rendered at the image size
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
    refused("format version 3 .*reads versions 1, 2")
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


@pytest.mark.slow
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


# ------------------------------------------------------------------------ the task, multi-label


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory):
    """A tiny multi-label model (one epoch) on the BigEarthNet fixture, s1 at 32 px, and its settings."""
    from fed_uml.methods import train_settings
    from fed_uml.training import train_unpaired

    torch.set_num_threads(1)
    root = make_bigearthnet_v1(tmp_path_factory.mktemp("ben")).parent
    cfg = {**tiny_config(), "dataset": dataset_config("bigearthnet", root, image_size=32)}
    data = load_dataset(cfg["dataset"])
    torch.manual_seed(0)
    model = build_model(cfg["model"], {"s1": data["s1"]})
    train_unpaired(model, {"s1": data["s1"].train}, train_settings(cfg), generator=torch.Generator().manual_seed(0))
    h = calibrate(model, {"s1": data["s1"].train.images}, batch_size=16)["s1"]
    return cfg, data["s1"], h


def test_multi_label_model_file_records_the_task_and_thresholds(multi_label, tmp_path):
    cfg, d, h = multi_label
    path = save_model(tmp_path / "model-s1.pt", h, d, cfg)
    payload = torch.load(path, weights_only=True)
    assert payload["task"] == "multi_label" and payload["thresholds"] == [0.5] * 19
    assert payload["thresholds_chosen"] == "fixed"
    # the patch as the reader delivered it: 120 px on the 10 m grid, resampled to the 32 px input
    assert payload["native_size"] == [120, 120] and payload["image_size"] == [32, 32]
    saved = load_model(path)
    assert saved.task == "multi_label" and saved.input_size == (120, 120)
    x = d.test.images
    with torch.no_grad():
        scores = torch.sigmoid(h(x))
    probs = saved.probabilities(x, normalized=True)
    assert torch.equal(probs, scores)  # sigmoid per class, not a softmax over the classes
    assert saved.predicted(probs) == [tuple(torch.nonzero(row >= 0.5).flatten().tolist()) for row in scores]

    tuned_cfg = {**cfg, "decision": {"threshold": 0.5, "thresholds": "tuned"}}
    tuned = load_model(save_model(tmp_path / "tuned-s1.pt", h, d, tuned_cfg))
    with torch.no_grad():
        train_scores = torch.sigmoid(h(d.train.images))
    assert list(tuned.thresholds) == tune_thresholds(train_scores, d.train.labels)
    assert tuned.thresholds != (0.5,) * 19
    assert torch.load(tmp_path / "tuned-s1.pt", weights_only=True)["thresholds_chosen"] == "tuned"

    extra = {SERVING_METADATA: ""}
    torch.export.load(export_program(saved, tmp_path / "s1.pt2"), extra_files=extra)
    meta = json.loads(extra[SERVING_METADATA])
    assert meta["task"] == "multi_label" and "sigmoid" in meta["output"] and meta["thresholds"] == [0.5] * 19


def _as_version_1(path, out):
    """`path` as fed-uml wrote model files before the task was recorded (version 1)."""
    payload = torch.load(path, weights_only=True)
    for key in ("task", "thresholds", "thresholds_chosen", "native_size", "digest"):
        payload.pop(key)
    payload["format_version"] = 1
    payload["digest"] = _digest(payload)
    torch.save(payload, out)
    return out


def test_version_1_files_are_read_only_where_certainly_single_label(trained, multi_label, tmp_path):
    cfg, data, h = trained
    single = _as_version_1(save_model(tmp_path / "v2-rgb.pt", h["rgb"], data["rgb"], cfg), tmp_path / "model-rgb.pt")
    saved = load_model(single)  # no dataset.task recorded: before multi-label training existed
    assert saved.task == "single_label" and saved.input_size == (16, 16)
    x = data["rgb"].test.images
    assert torch.equal(saved.probabilities(x, normalized=True), torch.softmax(h["rgb"](x), dim=1))

    cfg, d, h = multi_label
    old = _as_version_1(save_model(tmp_path / "v2-s1.pt", h, d, cfg), tmp_path / "model-s1.pt")
    with pytest.raises(ModelFileError, match=r"version-1 model file of a multi_label model.*"
                                             r"python -m experiments.predict .*model-s1.pt --upgrade NEW.pt"):
        load_model(old)
    new = upgrade_model_file(old, tmp_path / "upgraded-s1.pt")
    upgraded = load_model(new)
    assert upgraded.task == "multi_label" and upgraded.thresholds == (0.5,) * 19
    assert torch.equal(upgraded.logits(d.test.images, normalized=True), h(d.test.images))
    with pytest.raises(ModelFileError, match="already format version 2"):
        upgrade_model_file(new, tmp_path / "again.pt")
    with pytest.raises(ModelFileError, match="must not replace the original"):
        upgrade_model_file(old, old)


def _forge(path, settings: dict | None = None, **changes):
    """Edit a model file and recompute its digests, as anyone who can write the file can."""
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    if settings is not None:
        payload["settings"] = json.dumps(settings)
        payload["settings_digest"] = _sha256(payload["settings"])
    payload["digest"] = _digest(payload)
    torch.save(payload, path)


def test_fields_that_contradict_each_other_are_refused_despite_a_recomputed_digest(trained, tmp_path):
    cfg, data, h = trained
    path = save_model(tmp_path / "model-rgb.pt", h["rgb"], data["rgb"], cfg)
    good = path.read_bytes()
    settings = json.loads(torch.load(path, weights_only=True)["settings"])

    def refused(match, settings=None, **changes):
        path.write_bytes(good)
        _forge(path, settings, **changes)
        with pytest.raises(ModelFileError, match=match):
            load_model(path)

    # B02 and B04 swapped: the digest fits, the bands contradict the settings recorded with them
    refused(r"bands B02, B03, B04 are not the bands its recorded settings select for modality 'rgb' "
            r"\(B04, B03, B02, in this order\)", bands=["B02", "B03", "B04"])
    refused(r"image_size \[16\] is not \[height, width\]", image_size=[16])
    refused(r"image_size \[0, 16\] is not \[height, width\]", image_size=[0, 16])
    refused(r"native_size \[16, 16, 3\] is not", native_size=[16, 16, 3])
    refused(r"image_size \[24, 24\] is not the recorded settings' dataset.image_size 16", image_size=[24, 24])
    refused(r"modality 'nir' is not one its recorded settings define", modality="nir")
    refused(r"bands B04, B03, B02 are not the bands its recorded settings select for modality 'ms'", modality="ms")
    refused(r"task 'regression' is not one of", task="regression")
    refused(r"single-label model \(argmax\) with decision thresholds", thresholds=[0.5] * 10)
    refused(r"multi-label model needs one decision threshold in \[0, 1\] per class \(10\)",
            task="multi_label", thresholds=[0.5] * 9)
    # what cannot be told apart: bands and settings edited together, both digests recomputed
    settings["dataset"]["sensors"]["rgb"]["bands"] = ["B02", "B03", "B04"]
    path.write_bytes(good)
    _forge(path, settings, bands=["B02", "B03", "B04"])
    assert load_model(path).bands == ("B02", "B03", "B04")
