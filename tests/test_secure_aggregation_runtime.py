"""Secure aggregation and differential privacy in the real Flower runtime (Ray simulation):
the secure run's accuracies equal the plain run's (same seed) within the quantisation
tolerance, no train reply carries a backbone array, and a DP run writes epsilon per round."""

from __future__ import annotations

import json
import math

import pytest

from fed_uml.federated.config import run_config_from_overrides
from tests.flower_helpers import TINY, read_audit

pytestmark = pytest.mark.slow

BASE = TINY.split() + ["federated.num_rounds=3", "federated.evaluate_every=3", "federated.weighting=modality"]


def _run(flower_runtime, tmp_path, name, overrides, audit=False):
    results_dir = tmp_path / name
    keys = {"results-dir": str(results_dir)}
    if audit:
        keys["audit-log"] = str(tmp_path / f"{name}.jsonl")
    flower_runtime.run(run_config_from_overrides(BASE + overrides, **keys),
                       {"num-supernodes": 4, "client-resources-num-cpus": 1})
    return json.loads((results_dir / "results.json").read_text())


def test_secure_run_equals_plain_run_and_dp_run_records_epsilon(flower_runtime, tmp_path):
    flower_runtime.start_superlink(simulation=True)
    plain = _run(flower_runtime, tmp_path, "plain", [])
    secure = _run(flower_runtime, tmp_path, "secure", ["federated.secure_aggregation=true"], audit=True)
    for m, mod in plain["modalities"].items():
        # the backbones differ by at most the quantisation bound per element and round (~5e-7);
        # over the rounds the stated tolerance of the accuracies (docs/privacy.md) is one
        # percentage point or one test example, whichever is larger
        for key in ("accuracy_before_calibration", "accuracy_after_calibration"):
            tolerance = max(0.01, 1 / mod["n_test"]) + 1e-9
            assert abs(secure["modalities"][m][key] - mod[key]) <= tolerance, (m, key)
    for record in secure["history"]:
        assert record["secure_arrays_in_clear"] == 0 and record["secure_summed"] == 4
        assert record["secure_range_exceeded"] == 0 and max(record["secure_quantisation_bound"].values()) < 1e-5
    # what left the institutions: no train reply carries a backbone array
    trains = [e for e in read_audit(tmp_path / "secure.jsonl") if e["message_type"] == "train"]
    assert len(trains) == 4 * 4 * 3  # four SecAgg+ stages, four institutions, three rounds
    for entry in trains:
        for rec in entry["records"].values():
            assert rec["type"] != "array" or rec["arrays"] == {}

    dp = _run(flower_runtime, tmp_path, "dp", ["federated.dp_noise_multiplier=1.0", "federated.dp_clipping_norm=1.0",
                                               "federated.secure_aggregation=true"])
    eps = [r["dp_epsilon"] for r in dp["history"]]
    assert len(eps) == 3 and all(math.isfinite(e) and e > 0 for e in eps) and eps == sorted(eps)


def test_secure_aggregation_in_a_loopback_deployment(tmp_path):
    from experiments.deploy_local import deploy
    from fed_uml.federated.config import compose_config
    from localrun.flower import find_strays

    overrides = TINY.split() + ['federated.institutions_per_modality="sar:2,rgb:1"', "federated.num_rounds=1",
                                "federated.evaluate_every=0", "federated.secure_aggregation=true"]
    path = deploy(compose_config(overrides), overrides, tmp_path / "deployment", tmp_path / "results",
                  extra_run_config={"audit-log": str(tmp_path / "audit.jsonl")})
    results = json.loads(path.read_text())
    assert sorted(i["name"] for i in results["institutions"]) == ["rgb-0", "sar-0", "sar-1"]
    (record,) = results["history"]
    assert record["secure_summed"] == 3 and record["secure_arrays_in_clear"] == 0 and not results["failures"]
    trains = [e for e in read_audit(tmp_path / "audit.jsonl") if e["message_type"] == "train"]
    assert len(trains) == 4 * 3
    assert all(rec["type"] != "array" or rec["arrays"] == {} for e in trains for rec in e["records"].values())
    assert not find_strays(tmp_path)
