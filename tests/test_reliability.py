"""Institution failures, a resumable server and determinism, on the real Flower runtime."""

from __future__ import annotations

import json
import time

import pytest
import torch

from experiments.deploy_local import deploy
from fed_uml.centralized import run_centralized
from fed_uml.federated.config import compose_config, run_config_from_overrides
from localrun.flower import FlowerRuntime, find_strays
from tests.conftest import tiny_config
from tests.flower_helpers import TINY

pytestmark = pytest.mark.slow

RUN = TINY.split() + ["federated.num_rounds=4", "federated.evaluate_every=0", "seed=5"]
FEDERATION = {"num-supernodes": 2, "client-resources-num-cpus": 1}


def _metrics(results: dict) -> dict:
    return {k: (v["accuracy_before_calibration"], v["accuracy_after_calibration"])
            for k, v in results["modalities"].items()}


def test_centralized_runs_are_deterministic():
    a = run_centralized(tiny_config(epochs=2))
    b = run_centralized(tiny_config(epochs=2))
    assert a["modalities"] == b["modalities"]


def test_stopped_server_resumes_and_matches_uninterrupted_run(flower_runtime, tmp_path):
    """Run A uninterrupted; run C stopped after its round-2 checkpoint, then resumed in a new
    run. Same seed, so C's first two rounds repeat A's exactly (determinism across runs), and
    the resumed C ends with A's final metrics. With fraction-train=0.5 one of the two
    institutions trains per round, so one of them did not train in round 2 and resumes from
    the private state of an earlier round (or its initial one). `describe-upfront=true`: under
    partial participation a simulation's cohorts are reproducible only when the server knows
    every institution by name before round 1 (Flower's node ids change from run to run)."""
    rt = flower_runtime
    rt.start_superlink(simulation=True)
    a_dir, c_dir, c_state = tmp_path / "a", tmp_path / "c", tmp_path / "state-c"
    run = RUN + ["federated.fraction_train=0.5", "federated.describe_upfront=true"]
    rt.run(run_config_from_overrides(run, **{"results-dir": str(a_dir), "state-dir": str(tmp_path / "state-a")}),
           FEDERATION)
    a = json.loads((a_dir / "results.json").read_text())
    assert all(h["participants"] == 1 for h in a["history"])

    rt.run(run_config_from_overrides(run, **{"results-dir": str(c_dir), "state-dir": str(c_state),
                                             "stop-after-round": 2}), FEDERATION, log_name="stopped")
    assert not (c_dir / "results.json").exists()
    stopped = torch.load(c_dir / "checkpoint.pt", weights_only=True)
    assert stopped["round"] == 2
    losses = lambda history: [(h.get("sar/train_loss"), h.get("rgb/train_loss")) for h in history]  # noqa: E731
    assert losses(stopped["history"]) == losses(a["history"][:2]), "two runs with the same seed differ"

    rt.run(run_config_from_overrides(run, **{"results-dir": str(c_dir), "state-dir": str(c_state), "resume": True}),
           FEDERATION, log_name="resume")
    resumed = json.loads((c_dir / "results.json").read_text())
    assert [h["round"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert losses(resumed["history"]) == losses(a["history"])
    assert _metrics(resumed) == _metrics(a)
    assert "resuming after round 2" in (rt.workdir / "resume.log").read_text()


def test_run_completes_when_an_institution_dies(tmp_path):
    """Loopback deployment, 4 SuperNodes; one is killed after round 1; the run finishes with
    the other three and results.json records the failure."""
    overrides = TINY.split() + ['federated.institutions_per_modality="sar:2,rgb:2"', "federated.num_rounds=3",
                                "federated.evaluate_every=0", "federated.round_timeout=120"]
    cfg = compose_config(overrides)
    results_dir = tmp_path / "results"

    def kill_one(rt: FlowerRuntime) -> None:
        checkpoint = results_dir / "checkpoint.pt"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not checkpoint.exists():
            time.sleep(0.2)
        victim = next(p for p in rt.processes if "supernode-sar-1" in str(p.log_path))
        victim.kill()

    path = deploy(cfg, overrides, tmp_path / "deployment", results_dir, during_run=kill_one,
                  min_institutions=3)
    results = json.loads(path.read_text())
    names = sorted(i["name"] for i in results["institutions"])
    assert names == ["rgb-0", "rgb-1", "sar-0"]
    assert results["modalities"]["sar"]["institutions"] == 1
    failed = {f["institution"] for f in results["failures"]}
    assert failed == {"sar-1"}
    assert not find_strays(tmp_path)


def test_one_bad_institution_does_not_stop_the_others(flower_runtime, tmp_path):
    """A third modality whose institution cannot load its data (an unknown band) fails on
    its own: recorded in results.json, while the other institutions finish the run."""
    overrides = TINY.split() + ["dataset.modalities=[sar,rgb,broken]", "+dataset.sensors.broken.sensor=optical",
                                "+dataset.sensors.broken.bands=[B99]", "federated.num_rounds=1",
                                "federated.evaluate_every=0"]
    flower_runtime.start_superlink(simulation=True)
    flower_runtime.run(run_config_from_overrides(overrides, **{"results-dir": str(tmp_path / "results")}),
                       {"num-supernodes": 3, "client-resources-num-cpus": 1})
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert sorted(i["name"] for i in results["institutions"]) == ["rgb-0", "sar-0"]
    assert set(results["modalities"]) == {"sar", "rgb"}
    # it fails at its first contact: round 1's train message (uml, everyone trains: no describe first)
    assert results["failures"] and all(f["stage"] == "train" and f["round"] == 1 for f in results["failures"])
    assert any("B99" in f["error"] for f in results["failures"])
