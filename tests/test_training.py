"""The unpaired training loop, the methods and the centralized runner."""

import json
import subprocess
import sys

import pytest
import torch

from fed_uml.modality import ArrayDataset
from fed_uml.experiment import run_centralized
from fed_uml.models import create_model
from fed_uml.training import TrainSettings, train_unpaired
from tests.conftest import REPO, tiny_config


def _data(n=24, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randn(n, c, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


def _model():
    torch.manual_seed(0)
    return create_model("small_cnn", {"sar": 2, "rgb": 3}, num_classes=3, width=4)


def test_training_is_repeatable_and_changes_weights():
    data = {"sar": _data(c=2), "rgb": _data(n=40, c=3, seed=1)}
    states = []
    for _ in range(2):
        model = _model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        history = train_unpaired(model, data, TrainSettings(epochs=2, batch_size=8, log_every=0))
        states.append(model.state_dict())
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    # an epoch is one pass over the largest modality (40 rgb samples -> 5 steps of 8)
    assert len(history) == 2 and set(history[0]) >= {"sar/loss", "rgb/loss", "rgb/train_accuracy"}


@pytest.mark.parametrize("fusion", ["separate", "concat"])
def test_both_fusions_train(fusion):
    model = _model()
    train_unpaired(model, {"sar": _data(c=2), "rgb": _data(c=3)},
                   TrainSettings(epochs=1, batch_size=8, fusion=fusion, log_every=0))


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


def test_loss_weights_and_bad_settings():
    with pytest.raises(ValueError, match="training.fusion"):
        TrainSettings.from_config({"fusion": "sum"})
    with pytest.raises(ValueError, match="unknown training setting"):
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


def test_unimodal_baseline_uses_the_same_architecture():
    results = run_centralized(tiny_config(method="unimodal", epochs=1))
    assert results["method"] == "unimodal" and set(results["modalities"]) == {"sar", "rgb"}
    assert results["modalities"]["sar"]["accuracy"] == results["modalities"]["sar"]["accuracy_before_calibration"]


def test_clear_errors_for_unknown_method_and_modality():
    with pytest.raises(ValueError, match="unknown method 'umll'"):
        run_centralized(tiny_config(method="umll"))
    with pytest.raises(ValueError, match="unknown modality 'lidar'"):
        run_centralized(tiny_config(modalities=("sar", "lidar")))
    with pytest.raises(ValueError, match="samples_per_class must be >= 1"):
        run_centralized(tiny_config(samples_per_class=0))


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
