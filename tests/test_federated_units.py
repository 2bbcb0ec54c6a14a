"""Federated building blocks without the runtime: institutions, partitions, config, aggregation."""

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fed_uml.federated.config import (
    RUN_CONFIG_KEYS,
    config_from_run_config,
    default_run_config,
    run_config_to_overrides,
)
from fed_uml.federated.institutions import (
    institution_for_node,
    institution_layout,
    parse_counts,
)
from fed_uml.federated.partition import split_indices
from fed_uml.federated.transfer import from_wire, to_wire
from server.strategy import BackboneFedAvg
from tests.flower_helpers import message

REPO = Path(__file__).resolve().parents[1]


def test_round_robin_layout_and_explicit_counts():
    layout = institution_layout(5, ["sar", "rgb"], 0)
    assert [(i.modality, i.index, i.count) for i in layout] == [
        ("sar", 0, 3), ("rgb", 0, 2), ("sar", 1, 3), ("rgb", 1, 2), ("sar", 2, 3)]
    layout = institution_layout(4, ["sar", "rgb"], "sar:3,rgb:1")
    assert [i.name for i in layout] == ["sar-0", "sar-1", "sar-2", "rgb-0"]
    with pytest.raises(ValueError, match="asks for 4 institutions .* but the federation has 5 nodes"):
        institution_layout(5, ["sar", "rgb"], "sar:3,rgb:1")
    with pytest.raises(ValueError, match="cannot hold 2 modalities"):
        institution_layout(1, ["sar", "rgb"], 0)
    with pytest.raises(ValueError, match="unknown \\['ms'\\]"):
        parse_counts("sar:1,ms:2", ["sar", "rgb"])


def test_deployment_node_config_names_the_modality():
    inst = institution_for_node({"modality": "rgb", "partition-id": 1, "num-partitions": 3, "data-root": "/d"},
                                ["sar", "rgb"], 0)
    assert (inst.modality, inst.index, inst.count, inst.data_root) == ("rgb", 1, 3, "/d")
    with pytest.raises(ValueError, match="modality='ms' is not among"):
        institution_for_node({"modality": "ms", "partition-id": 0, "num-partitions": 1}, ["sar", "rgb"], 0)
    with pytest.raises(ValueError, match="lacks 'partition-id'"):
        institution_for_node({}, ["sar"], 0)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partitions_are_disjoint_and_cover_the_data(scheme):
    labels = np.repeat(np.arange(10), 30)
    parts = [split_indices(labels, 4, p, scheme, alpha=0.3, seed=7) for p in range(4)]
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    assert all(len(p) >= 2 for p in parts)
    # every institution computes the same split on its own
    assert np.array_equal(parts[2], split_indices(labels, 4, 2, scheme, alpha=0.3, seed=7))


def test_dirichlet_skews_labels_and_iid_does_not():
    labels = np.repeat(np.arange(10), 100)

    def skew(scheme, alpha):
        hist = [np.bincount(labels[split_indices(labels, 5, p, scheme, alpha, 0)], minlength=10) for p in range(5)]
        return np.mean([h.max() / h.sum() for h in hist])

    assert skew("iid", 1.0) < 0.2
    assert skew("dirichlet", 0.1) > 0.4


def test_pyproject_run_config_equals_hydra_defaults():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    app_config = pyproject["tool"]["flwr"]["app"]["config"]
    assert set(app_config) == set(RUN_CONFIG_KEYS)
    assert app_config == default_run_config()
    assert "federations" not in pyproject["tool"]["flwr"]


def test_run_config_maps_onto_hydra():
    cfg = config_from_run_config({"local-epochs": 5, "modalities": "sar,rgb,ms", "weighting": "modality",
                                  "overrides": "training.lr=0.01 federated.num_rounds=7", "data-root": ""})
    assert cfg["federated"]["local_epochs"] == 5 and cfg["federated"]["num_rounds"] == 7
    assert cfg["dataset"]["modalities"] == ["sar", "rgb", "ms"] and cfg["training"]["lr"] == 0.01
    assert cfg["federated"]["weighting"] == "modality"
    with pytest.raises(ValueError, match="unknown run-config key"):
        run_config_to_overrides({"local_epochs": 3})


def _reply(n: int, modality: int, value: float) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"backbone.w": torch.full((2,), value)}),
                          "metrics": MetricRecord({"num-examples": n, "modality-index": modality})})
    return Message(content, reply_to=message(RecordDict(), "train"))


def test_fedavg_weights_by_examples_or_by_modality():
    # sar: two institutions with 10 and 30 examples; rgb: one with 360
    replies = lambda: [_reply(10, 0, 0.0), _reply(30, 0, 4.0), _reply(360, 1, 10.0)]  # noqa: E731
    agg, _ = BackboneFedAvg("examples").aggregate_train(1, replies())
    assert agg["backbone.w"].numpy() == pytest.approx([(30 * 4 + 360 * 10) / 400] * 2)
    agg, _ = BackboneFedAvg("modality").aggregate_train(1, replies())
    # each modality weighs 1/2; inside sar, by examples: (0.25 * 0 + 0.75 * 4) = 3
    assert agg["backbone.w"].numpy() == pytest.approx([0.5 * 3.0 + 0.5 * 10.0] * 2)
    with pytest.raises(ValueError, match="federated.weighting"):
        BackboneFedAvg("size")


def test_float16_transfer_roundtrip():
    state = {"backbone.w": torch.randn(100)}
    wire = to_wire(state, "float16")
    assert wire.count_bytes() < to_wire(state, "float32").count_bytes()
    back = from_wire(wire)
    assert back["backbone.w"].dtype == torch.float32
    torch.testing.assert_close(back["backbone.w"], state["backbone.w"], atol=1e-2, rtol=1e-3)


def test_server_never_imports_data_readers():
    code = ("import sys; import server.server_app, server.orchestrator; "
            "bad = [m for m in sys.modules if m.startswith(('fed_uml.data', 'tifffile', 'pyarrow')) "
            "or m == 'fed_uml.federated.institution']; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
