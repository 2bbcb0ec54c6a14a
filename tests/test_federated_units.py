"""Federated building blocks without the runtime: roles, partitions, config, the protocol,
sampling and aggregation, the server's summaries, backbones and checkpoints, the private store."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Message, RecordDict

from fed_uml.federated import protocol
from fed_uml.federated.config import (
    config_from_run_config,
    run_config_to_overrides,
)
from fed_uml.federated.partition import split_indices
from fed_uml.federated.private_store import PrivateStateStore
from fed_uml.federated.protocol import CalibrateReport, Description, TrainInstruction, TrainReport
from fed_uml.federated.roles import (
    institution_for_node,
    institution_layout,
    parse_counts,
)
from fed_uml.federated.transfer import as_float32, from_wire, to_wire
from server import FederationError
from server.checkpoint import Checkpoint, config_digest, load_checkpoint, save_checkpoint
from server.roster import Member, Roster
from server.strategy import BackboneFedAvg
from server.summary import calibration_results, train_metrics, weighted_means
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


@pytest.mark.parametrize("n,parts", [(300, 4), (301, 4), (307, 7), (23, 10), (10_003, 5_000)])
def test_an_iid_share_is_its_part_of_the_seeded_permutation(n, parts):
    """Each institution cuts only its own share (the split is O(1) per institution, not
    O(institutions)), and the shares are those of cutting the seeded permutation into
    near-equal parts, the larger ones first, as every earlier run's seeded metrics were made."""
    labels = np.arange(n) % 10
    expected = np.array_split(np.random.default_rng(5).permutation(n), parts)
    for p in {0, 1, parts // 2, parts - 1}:
        assert np.array_equal(split_indices(labels, parts, p, "iid", seed=5, min_size=1), np.sort(expected[p]))


def test_dirichlet_skews_labels_and_iid_does_not():
    labels = np.repeat(np.arange(10), 100)

    def skew(scheme, alpha):
        hist = [np.bincount(labels[split_indices(labels, 5, p, scheme, alpha, 0)], minlength=10) for p in range(5)]
        return np.mean([h.max() / h.sum() for h in hist])

    assert skew("iid", 1.0) < 0.2
    assert skew("dirichlet", 0.1) > 0.4


def test_run_config_maps_onto_hydra():
    cfg = config_from_run_config({"local-epochs": 5, "modalities": "sar,rgb,ms", "weighting": "modality",
                                  "overrides": "training.lr=0.01 federated.num_rounds=7", "data-root": ""})
    assert cfg["federated"]["local_epochs"] == 5 and cfg["federated"]["num_rounds"] == 7
    assert cfg["dataset"]["modalities"] == ["sar", "rgb", "ms"] and cfg["training"]["lr"] == 0.01
    assert cfg["federated"]["weighting"] == "modality"
    with pytest.raises(ValueError, match="unknown run-config key"):
        run_config_to_overrides({"local_epochs": 3})


def _reply(n: int, value: float, dtype: str = "float32") -> Message:
    report = TrainReport(num_examples=n, optimizer_steps=1, train_loss=1.0, train_accuracy=0.5)
    content = report.content(to_wire({"backbone.w": torch.full((2,), value)}, dtype))
    return Message(content, reply_to=message(RecordDict(), protocol.TRAIN))


def test_fedavg_weights_by_examples_or_by_modality():
    # sar: two institutions with 10 and 30 examples; rgb: one with 360 (the server knows
    # each reply's modality by node id: replies carry no modality)
    replies = lambda: [_reply(10, 0.0), _reply(30, 4.0), _reply(360, 10.0)]  # noqa: E731
    modalities = ["sar", "sar", "rgb"]
    agg = BackboneFedAvg("examples").aggregate(1, replies(), modalities)
    assert agg["backbone.w"].numpy() == pytest.approx([(30 * 4 + 360 * 10) / 400] * 2)
    agg = BackboneFedAvg("modality").aggregate(1, replies(), modalities)
    # each modality weighs 1/2; inside sar, by examples: (0.25 * 0 + 0.75 * 4) = 3
    assert agg["backbone.w"].numpy() == pytest.approx([0.5 * 3.0 + 0.5 * 10.0] * 2)
    # float16 replies are averaged in float32
    agg = BackboneFedAvg("examples").aggregate(1, [_reply(1, 1.0, "float16"), _reply(1, 2.0, "float16")],
                                               ["sar", "rgb"])
    assert agg["backbone.w"].numpy().dtype == np.float32 and agg["backbone.w"].numpy() == pytest.approx([1.5] * 2)
    with pytest.raises(ValueError, match="federated.weighting"):
        BackboneFedAvg("size")


def test_mixed_weighting_interpolates_between_examples_and_modality():
    # the replies of the test above: examples mean 9.3, modality mean 6.5
    replies = lambda: [_reply(10, 0.0), _reply(30, 4.0), _reply(360, 10.0)]  # noqa: E731
    modalities = ["sar", "sar", "rgb"]

    def mean(mix: float) -> float:
        averaged = BackboneFedAvg("mixed", weighting_mix=mix).aggregate(1, replies(), modalities)
        return float(averaged["backbone.w"].numpy()[0])

    by_examples, by_modality = (30 * 4 + 360 * 10) / 400, 0.5 * 3.0 + 0.5 * 10.0
    assert mean(0.0) == pytest.approx(by_examples) and mean(1.0) == pytest.approx(by_modality)
    # weights normalised per rule before mixing: the mean is linear in the mix
    assert mean(0.25) == pytest.approx(0.75 * by_examples + 0.25 * by_modality)
    assert BackboneFedAvg("mixed", weighting_mix=0.5).weights([25, 25, 250, 250], ["sar", "sar", "rgb", "rgb"]) == \
        pytest.approx([0.5 * 25 / 550 + 0.5 * 0.25] * 2 + [0.5 * 250 / 550 + 0.5 * 0.25] * 2)
    with pytest.raises(ValueError, match="weighting_mix"):
        BackboneFedAvg("mixed", weighting_mix=1.5)


def test_sampling_lives_with_its_validation_in_the_strategy():
    nodes = list(range(10))
    a, b = BackboneFedAvg(fraction_train=0.3, seed=4), BackboneFedAvg(fraction_train=0.3, seed=4)
    draws = [a.sample(nodes) for _ in range(5)]
    assert draws == [b.sample(nodes) for _ in range(5)]  # seeded: reproducible
    assert all(len(d) == 3 and len(set(d)) == 3 and set(d) <= set(nodes) for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    assert BackboneFedAvg(fraction_train=1.0).sample(nodes) == nodes
    assert len(BackboneFedAvg(fraction_train=0.01).sample(nodes)) == 1  # at least one
    with pytest.raises(ValueError, match="fraction_train"):
        BackboneFedAvg(fraction_train=0.0)


def test_protocol_records_round_trip_and_name_what_is_missing():
    task = TrainInstruction(server_round=3, num_rounds=30, local_epochs=2, local_steps=0, transfer_dtype="float16")
    content = task.content(to_wire({"backbone.w": torch.zeros(1)}))
    assert set(content.keys()) == {protocol.CONFIG, protocol.ARRAYS}
    assert dict(content[protocol.CONFIG]) == {"server-round": 3, "num-rounds": 30, "local-epochs": 2,
                                              "local-steps": 0, "transfer-dtype": "float16"}
    assert TrainInstruction.from_content(content) == task
    report = CalibrateReport(num_examples=15, n_train=20, accuracy_before_calibration=0.5,
                             accuracy_after_calibration=0.75, model_saved=True)
    wire = report.content()[protocol.METRICS]
    assert wire[protocol.MODEL_SAVED] == 1 and not isinstance(wire[protocol.MODEL_SAVED], bool)
    assert CalibrateReport.from_content(report.content()) == report
    assert report["num-examples"] == 15 and dict(report) == report.to_dict()  # reads as its wire form
    with pytest.raises(ValueError, match="TrainInstruction: the message has no 'local-epochs'"):
        TrainInstruction.from_record({"server-round": 1, "num-rounds": 2})


def _describe_reply(modality: str, name: str, num_classes: int = 10) -> Message:
    d = Description(modality=modality, institution=name, n_train=20, n_test=15, num_classes=num_classes,
                    in_channels=2)
    return Message(d.content(), reply_to=message(RecordDict(), protocol.DESCRIBE))


def test_roster_takes_names_and_modalities_from_the_descriptions():
    roster = Roster(["sar", "rgb"], 10, "unimodal")
    roster.admit({7: _describe_reply("rgb", "rgb-0"), 3: _describe_reply("sar", "sar-1"),
                  5: _describe_reply("sar", "sar-0")})
    assert roster.name(3) == "sar-1" and roster.modality(7) == "rgb" and roster.name(99) is None
    assert roster.groups() == {"sar": [5, 3], "rgb": [7]}  # by institution name, not node id
    assert roster.groups(connected={3, 7}) == {"sar": [3], "rgb": [7]}
    with pytest.raises(FederationError, match="same institution"):
        Roster(["sar"], 10, "uml").admit({1: _describe_reply("sar", "sar-0"), 2: _describe_reply("sar", "sar-0")})
    with pytest.raises(FederationError, match="not among dataset.modalities"):
        Roster(["sar"], 10, "uml").admit({1: _describe_reply("ms", "ms-0")})
    with pytest.raises(FederationError, match="dataset.num_classes=10"):
        Roster(["sar"], 10, "uml").admit({1: _describe_reply("sar", "sar-0", num_classes=4)})


def test_one_weighted_mean_for_every_summary():
    assert weighted_means([("a", 1.0, {"x": 0.0}), ("b", 2.0, {"x": 5.0}), ("a", 3.0, {"x": 4.0})]) == {
        "a": {"x": 3.0}, "b": {"x": 5.0}}
    reports = [("rgb", TrainReport(10, 1, 2.0, 0.5)), ("sar", TrainReport(30, 1, 1.0, 1.0)),
               ("rgb", TrainReport(30, 1, 1.0, 0.1))]
    assert train_metrics(reports) == pytest.approx({"rgb/train_loss": 1.25, "rgb/train_accuracy": 0.2,
                                                    "sar/train_loss": 1.0, "sar/train_accuracy": 1.0})
    assert list(train_metrics(reports)) == ["rgb/train_loss", "rgb/train_accuracy", "sar/train_loss",
                                            "sar/train_accuracy"]


@pytest.mark.parametrize("calibrated", [True, False])
def test_calibration_results_per_modality(calibrated):
    sar0, sar1, rgb0 = (Member(1, "sar", "sar-0", 20, 10), Member(2, "sar", "sar-1", 20, 30),
                        Member(3, "rgb", "rgb-0", 40, 20))
    reports = [(sar0, CalibrateReport(10, 20, 0.2, 0.6, True)), (sar1, CalibrateReport(30, 20, 0.6, 0.2, False)),
               (rgb0, CalibrateReport(20, 40, 0.5, 0.7, True))]
    modalities, per_inst = calibration_results(reports, ["rgb", "sar", "ms"], calibrated)
    assert list(modalities) == ["rgb", "sar"]  # in the order of the settings; no institution, no entry
    sar = modalities["sar"]
    assert sar["accuracy_before_calibration"] == pytest.approx(0.5)  # (10 * 0.2 + 30 * 0.6) / 40
    assert sar["accuracy_after_calibration"] == pytest.approx(0.3)
    assert sar["accuracy"] == (sar["accuracy_after_calibration"] if calibrated else sar["accuracy_before_calibration"])
    assert (sar["n_train"], sar["n_test"], sar["institutions"]) == (40, 40, 2)
    assert [i["name"] for i in per_inst] == ["sar-0", "sar-1", "rgb-0"]
    assert per_inst[1]["model_saved"] is False and per_inst[0]["node_id"] == 1


def test_group_backbones_serialise_once_per_version(monkeypatch):
    import server.rounds as rounds

    calls = []
    monkeypatch.setattr(rounds, "to_wire", lambda state, dtype: calls.append(dtype) or to_wire(state, dtype))
    backbones = rounds.GroupBackbones({"uml": {"backbone.w": torch.ones(4)}}, "float16")
    sent = [backbones.wire("uml") for _ in range(8)]  # every message of a round
    assert all(s is sent[0] for s in sent) and backbones.bytes_per_institution() == sent[0].count_bytes()
    assert calls == ["float16"]
    backbones.replace("uml", {"backbone.w": torch.zeros(4)})
    assert from_wire(backbones.wire("uml"))["backbone.w"].sum() == 0 and calls == ["float16"] * 2


def test_checkpoint_round_trip_and_settings_digest(tmp_path):
    cfg = {"seed": 1, "resume": False, "federated": {"num_rounds": 4, "round_timeout": 5}, "results_dir": "/a"}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, Checkpoint(2, {"uml": {"w": torch.ones(2)}}, [{"round": 1}], [], (3, (1,), None)), cfg)
    assert load_checkpoint(path, cfg, resume=False) is None
    free = {**cfg, "results_dir": "/b", "resume": True, "federated": {**cfg["federated"], "round_timeout": 9}}
    assert config_digest(free) == config_digest(cfg)
    back = load_checkpoint(path, free, resume=True)
    assert back.round == 2 and torch.equal(back.arrays["uml"]["w"], torch.ones(2)) and back.history == [{"round": 1}]
    with pytest.raises(FederationError, match="other settings"):
        load_checkpoint(path, {**cfg, "seed": 2}, resume=True)
    assert load_checkpoint(tmp_path / "none.pt", cfg, resume=True) is None


def test_private_store_keeps_the_newest_state_at_or_before_every_resumable_round(tmp_path):
    store = PrivateStateStore(tmp_path, "sar-0")
    state = lambda r: {"w": torch.full((1,), float(r))}  # noqa: E731
    for r in (5, 6):  # an earlier run's files
        store.save(r, state(r))
    store.start(state(0))
    assert store.rounds() == [0]
    for r in (1, 3, 4):  # trained in rounds 1, 3 and 4 (not sampled in round 2)
        store.save(r, state(r))
    assert store.rounds() == [3, 4]
    assert store.latest(3)[0] == 3 and store.latest(9)[0] == 4
    store.save(2, state(2))  # the run went back to round 2: rounds after it are stale
    assert store.rounds() == [2]
    r, s = store.resume(2)
    assert r == 2 and s["w"].item() == 2.0
    with pytest.raises(FileNotFoundError, match="round 1 or before"):
        store.latest(1)


def test_float16_transfer_roundtrip():
    state = {"backbone.w": torch.randn(100), "backbone.n": torch.tensor(3)}
    wire = to_wire(state, "float16")
    assert wire.count_bytes() < to_wire(state, "float32").count_bytes()
    back = from_wire(wire)
    assert back["backbone.w"].dtype == torch.float32 and back["backbone.n"].dtype == torch.int64
    torch.testing.assert_close(back["backbone.w"], state["backbone.w"], atol=1e-2, rtol=1e-3)
    assert as_float32(wire)["backbone.w"].dtype == "float32"


@pytest.mark.slow
def test_server_never_imports_data_readers():
    code = ("import sys; import server.server_app, server.rounds; "
            "bad = [m for m in sys.modules if m.startswith(('fed_uml.data', 'tifffile', 'pyarrow')) "
            "or m == 'fed_uml.federated.institution']; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_evaluation_and_calibration_sample_each_modality(tmp_path):
    """fraction_evaluate / fraction_calibrate draw that share of EACH modality's institutions
    (at least one each); 1.0 keeps every institution, in the order of the groups."""
    from fed_uml.federated.config import compose_config
    from server.roster import Member
    from server.rounds import FederatedRun, GroupBackbones

    class Grid:  # what FederatedRun asks of Flower's Grid here
        def get_node_ids(self):
            return list(range(1, 41))

    def run_with(**fractions):
        overrides = [f"federated.fraction_{k}={v}" for k, v in fractions.items()]
        run = FederatedRun(Grid(), compose_config(overrides), tmp_path)
        for n in range(1, 41):  # 30 sar and 10 rgb institutions
            mod, i = ("sar", n - 1) if n <= 30 else ("rgb", n - 31)
            run.roster.members[n] = Member(n, mod, f"{mod}-{i}", 10, 5)
        run.contacted.update(run.roster.members)  # met in this run: no describe goes out first
        return run, GroupBackbones({"uml": {"backbone.w": torch.zeros(2)}}, "float32")

    run, backbones = run_with()
    assert list(run._everyone(backbones, run.strategy.fraction_evaluate)) == run.roster.groups()["uml"]
    run, backbones = run_with(evaluate=0.1, calibrate=0.5)
    evaluated = run._everyone(backbones, run.strategy.fraction_evaluate)
    mods = [run.roster.modality(n) for n in evaluated]
    assert mods.count("sar") == 3 and mods.count("rgb") == 1
    calibrated = run._everyone(backbones, run.strategy.fraction_calibrate)
    mods = [run.roster.modality(n) for n in calibrated]
    assert mods.count("sar") == 15 and mods.count("rgb") == 5
    with pytest.raises(ValueError, match="fraction_calibrate"):
        run_with(calibrate=0.0)
