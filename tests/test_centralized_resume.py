"""A centralized run killed in the middle and resumed equals the run that was never interrupted.

The training checkpoint (`fed_uml.training.checkpoint`) holds the model, the alignment
module, the optimiser, every batch order and every random state; resuming restores them, so
the resumed run must give the uninterrupted run's metrics and weights bit for bit (same
seed, same thread count). One test kills a real `python -m experiments.run` process with
SIGKILL; the others stop a run in-process right after its k-th checkpoint, across the phases
of the unimodal baseline (one model per modality) and of a compared method (DANN: its
discriminator and step count are state too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fed_uml.centralized import run_centralized
from fed_uml.training import checkpoint as checkpoints
from tests.conftest import REPO, tiny_config


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(folder.glob("model-*.pt")):
        state = torch.load(path, weights_only=True)["state_dict"]
        out.update({f"{path.name}/{k}": v for k, v in state.items()})
    return out


def _same_run(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["modalities"] == rb["modalities"]
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


class _Killed(Exception):
    pass


@pytest.mark.parametrize("method, stop_after_save", [("uml", 2), ("unimodal", 4), ("dann", 1)])
def test_stopped_after_a_checkpoint_and_resumed_equals_the_uninterrupted_run(tmp_path, monkeypatch, method,
                                                                               stop_after_save):
    cfg = tiny_config(method, epochs=3)
    cfg["training"]["checkpoint_every"] = 1
    run_centralized(cfg, tmp_path / "whole")

    original, saves = checkpoints.TrainingCheckpoints.save, []

    def save_then_die(self, phase, state):
        original(self, phase, state)
        saves.append(phase)
        if len(saves) == stop_after_save:
            raise _Killed

    monkeypatch.setattr(checkpoints.TrainingCheckpoints, "save", save_then_die)
    with pytest.raises(_Killed):
        run_centralized(cfg, tmp_path / "stopped")
    monkeypatch.setattr(checkpoints.TrainingCheckpoints, "save", original)
    assert not (tmp_path / "stopped" / "results.json").exists()
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    run_centralized({**cfg, "resume": True}, tmp_path / "stopped")
    _same_run(tmp_path / "whole", tmp_path / "stopped")
    assert not (tmp_path / "stopped" / "checkpoint.pt").exists(), "a finished run keeps no checkpoint"


def _run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_bit_for_bit(tmp_path):
    common = ["method=uml", "training.epochs=8", "training.checkpoint_every=1", "dataset.samples_per_class=40",
              "dataset.test_samples_per_class=5", "model.width=8", "num_threads=1"]
    whole = _run(common + [f"results_dir={tmp_path / 'whole'}"], tmp_path)
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    killed_dir = tmp_path / "killed"
    proc = _run(common + [f"results_dir={killed_dir}"], tmp_path)
    ckpt, done = killed_dir / "checkpoint.pt", 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                state = torch.load(ckpt, weights_only=True)
                done = max(p["epochs_done"] for p in state["phases"].values())
            except Exception:  # noqa: BLE001 - read while being renamed into place: try again
                done = 0
            if done >= 2:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed: give it more epochs"
    assert not (killed_dir / "results.json").exists()
    assert 2 <= done < 8

    refused = _run(common + [f"results_dir={killed_dir}"], tmp_path)
    out = refused.communicate(timeout=300)[0]
    assert refused.returncode == 2 and "holds the outputs of another run" in out and "resume=true" in out

    resumed = _run(common + [f"results_dir={killed_dir}", "resume=true"], tmp_path)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    _same_run(tmp_path / "whole", killed_dir)
