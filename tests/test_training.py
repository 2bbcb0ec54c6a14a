"""The unpaired training loop, the methods and the centralized runner."""

import json
import subprocess
import sys

import pytest
import torch

import fed_uml.methods.uml as uml_method
import fed_uml.methods.unimodal as unimodal_method
from fed_uml.centralized import run_centralized
from fed_uml.errors import SettingsError
from fed_uml.modality import ArrayDataset
from fed_uml.models import create_model
from fed_uml.training import TrainSettings, train_unpaired
from tests.conftest import REPO, tiny_config


def _data(n=24, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randn(n, c, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


def _model():
    torch.manual_seed(0)
    return create_model("small_cnn", {"sar": 2, "rgb": 3}, num_classes=3, width=4)


def test_training_is_repeatable_and_changes_weights(optimizer_steps):
    data = {"sar": _data(c=2), "rgb": _data(n=40, c=3, seed=1)}
    states = []
    for _ in range(2):
        model = _model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        history = train_unpaired(model, data, TrainSettings(epochs=2, batch_size=8, log_every=0))
        states.append(model.state_dict())
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert len(history) == 2 and set(history[0]) >= {"sar/loss", "rgb/loss", "rgb/train_accuracy"}
    # an epoch is one pass over the largest modality (40 rgb samples -> 5 steps of 8; the 24
    # sar samples are cycled), recorded per epoch and actually taken by the optimiser
    assert [r["steps"] for r in history] == [5, 5]
    assert optimizer_steps == [10, 10]


@pytest.mark.parametrize("fusion,backbone_batches", [
    ("separate", [8, 8] * 3),  # every modality's batch through the backbone on its own
    ("concat", [16] * 3),  # one pass with the two batches concatenated
])
def test_both_fusions_train(fusion, backbone_batches):
    model = _model()
    before = {k: v.clone() for k, v in model.named_parameters()}
    seen = []
    model.backbone.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    history = train_unpaired(model, {"sar": _data(c=2), "rgb": _data(c=3)},
                             TrainSettings(epochs=1, batch_size=8, fusion=fusion, log_every=0))
    assert seen == backbone_batches  # 24 samples, batches of 8: 3 steps
    assert all(0.0 < history[0][f"{k}/loss"] < 10.0 for k in ("sar", "rgb"))
    for k, v in model.named_parameters():  # both projections and the backbone are trained
        assert not torch.equal(before[k], v), k


def test_cosine_schedule_spans_the_whole_budget():
    model = _model()
    lrs = []
    opt_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return opt_step(self, *a, **k)

    data = {"sar": _data(n=16)}
    torch.optim.AdamW.step = spy
    try:
        s = TrainSettings(epochs=1, batch_size=8, lr=1.0, log_every=0)
        train_unpaired(_model(), data, s, epochs=2, start_epoch=0, total_epochs=4)  # first half of 4 epochs
        first = list(lrs)
        lrs.clear()
        train_unpaired(model, data, s, epochs=2, start_epoch=2, total_epochs=4)  # second half
    finally:
        torch.optim.AdamW.step = opt_step
    assert first[0] == pytest.approx(1.0) and first[-1] > 0.5
    assert lrs[0] == pytest.approx(0.5) and lrs[-1] < 0.05


def _one_sgd_step(loss_weights):
    """The change of every parameter after one plain SGD step (the same data and draws each call)."""
    model = _model()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    settings = TrainSettings(epochs=1, batch_size=8, optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.1,
                             augment=False, schedule="constant", loss_weights=loss_weights, log_every=0)
    train_unpaired(model, {"sar": _data(c=2), "rgb": _data(c=3)}, settings, steps_per_epoch=1)
    return {k: v.detach() - before[k] for k, v in model.named_parameters()}


def test_loss_weights_scale_each_modalitys_loss():
    """training.loss_weights multiplies each modality's cross-entropy: weight 0 leaves that
    modality's projection untouched, weight 2 doubles the step its loss alone drives."""
    plain = _one_sgd_step(None)
    ones = _one_sgd_step({"sar": 1.0, "rgb": 1.0})
    assert all(torch.equal(plain[k], ones[k]) for k in plain)  # unset = every weight 1
    sar = [k for k in plain if k.startswith("projections.sar.")]
    rgb = [k for k in plain if k.startswith("projections.rgb.")]
    assert sar and rgb and all(plain[k].abs().sum() > 0 for k in sar + rgb)
    no_sar = _one_sgd_step({"sar": 0.0})
    assert all(torch.equal(no_sar[k], torch.zeros_like(no_sar[k])) for k in sar)
    assert all(torch.equal(no_sar[k], plain[k]) for k in rgb)  # rgb's weight stays 1
    double_sar = _one_sgd_step({"sar": 2.0})
    for k in sar:
        torch.testing.assert_close(double_sar[k], 2 * plain[k])
    assert all(torch.equal(double_sar[k], plain[k]) for k in rgb)


def test_bad_training_settings_are_clear_errors():
    with pytest.raises(ValueError, match="training.fusion"):
        TrainSettings.from_config({"fusion": "sum"})
    with pytest.raises(SettingsError, match=r"unknown setting 'training\.epochz'; the settings of training are: "):
        TrainSettings.from_config({"epochz": 3})
    with pytest.raises(ValueError, match="no training samples"):
        train_unpaired(_model(), {"sar": ArrayDataset(torch.empty(0, 2, 8, 8), torch.empty(0))},
                       TrainSettings(epochs=1, log_every=0))


def test_three_modalities_train_and_calibrate():
    results = run_centralized(tiny_config(modalities=("sar", "rgb", "ms"), epochs=1))
    assert set(results["modalities"]) == {"sar", "rgb", "ms"}
    for m in results["modalities"].values():
        assert {"accuracy", "accuracy_before_calibration", "accuracy_after_calibration", "n_train", "n_test"} <= set(m)
        assert m["n_train"] == 30 and m["n_test"] == 20


def _trained_models(monkeypatch, module) -> list:
    """The models `module`'s method hands to the training loop, in order."""
    models = []

    def recording(model, *a, **k):
        models.append(model)
        return train_unpaired(model, *a, **k)

    monkeypatch.setattr(module, "train_unpaired", recording)
    return models


def _shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_unimodal_baseline_uses_the_same_architecture(monkeypatch):
    """Each unimodal model is UML's network for that one modality: the same projection and the
    same backbone, tensor for tensor (names and shapes)."""
    uml_models = _trained_models(monkeypatch, uml_method)
    run_centralized(tiny_config(method="uml", epochs=1))
    uni_models = _trained_models(monkeypatch, unimodal_method)
    results = run_centralized(tiny_config(method="unimodal", epochs=1))
    assert len(uml_models) == 1 and [m.modalities for m in uni_models] == [["sar"], ["rgb"]]
    uml = uml_models[0]
    for model in uni_models:
        (k,) = model.modalities
        assert _shapes(model.projection(k)) == _shapes(uml.projection(k))
        assert _shapes(model.backbone) == _shapes(uml.backbone)
    assert results["method"] == "unimodal" and set(results["modalities"]) == {"sar", "rgb"}
    # the baseline deploys its model as trained (its schema, UnimodalSettings: calibrate false)
    assert results["modalities"]["sar"]["accuracy"] == results["modalities"]["sar"]["accuracy_before_calibration"]


def test_clear_errors_for_unknown_method_and_modality():
    with pytest.raises(SettingsError, match="Could not find 'method/umll'"):
        tiny_config(method="umll")
    cfg = tiny_config()
    cfg["method"] = {"name": "umll", "calibrate": False}  # a config built by hand
    with pytest.raises(ValueError, match="unknown method 'umll'"):
        run_centralized(cfg)
    with pytest.raises(ValueError, match="unknown modality 'lidar'"):
        run_centralized(tiny_config(modalities=("sar", "lidar")))
    with pytest.raises(ValueError, match="samples_per_class must be >= 1"):
        run_centralized(tiny_config(samples_per_class=0))


@pytest.mark.slow
def test_runner_writes_results_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", "method=uml", f"results_dir={tmp_path}", "training.epochs=1",
         "model.width=4", "dataset.samples_per_class=2", "dataset.test_samples_per_class=2", "dataset.image_size=16",
         f"hydra.run.dir={tmp_path / 'hydra'}", "num_threads=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("method", "dataset", "seed", "federated", "modalities", "mean_accuracy", "config", "wall_seconds"):
        assert key in results
    assert results["federated"] is False and results["config"]["training"]["epochs"] == 1
    assert "[uml] epoch 1/1" in proc.stdout + proc.stderr  # progress while training
