"""Secure aggregation (SecAgg+ stages driven by server.secure, secaggplus_mod at the
institutions): the secure mean equals the plain one within the stated quantisation bound,
the server never receives a backbone array, and a dropped institution is handled as SecAgg+
promises (its masks recovered from its neighbours' shares, or the round halted cleanly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fed_uml.federated import protocol
from fed_uml.federated.config import compose_config
from fed_uml.federated.protocol import TrainInstruction
from fed_uml.schema import settings_of
from server import FederationError
from server.roster import Member, Roster
from server.rounds import GroupBackbones
from server.secure import PrivateRounds
from server.strategy import BackboneFedAvg
from tests.privacy_helpers import LocalGrid, LocalMessenger, backbone, max_abs_diff, server_process, toy_app, update_for

EXAMPLES = {11: 10, 12: 20, 13: 30, 14: 45, 15: 60}
MODALITY = {11: "sar", 12: "rgb", 13: "sar", 14: "rgb", 15: "sar"}
INSTRUCTION = TrainInstruction(server_round=1, num_rounds=1, local_epochs=1, local_steps=0, transfer_dtype="float32")


@pytest.fixture(autouse=True)
def _server_identity():
    with server_process():
        yield


def _round(overrides, weighting="examples", drop=None, nodes=tuple(EXAMPLES), method="uml", min_institutions=2):
    cfg = compose_config(["federated.secure_aggregation=true", f"federated.weighting={weighting}", *overrides])
    roster = Roster(["sar", "rgb"], 10, method)
    for n in nodes:
        roster.members[n] = Member(n, MODALITY[n], f"inst-{n}", EXAMPLES[n], 5)
    grid = LocalGrid(toy_app(EXAMPLES), nodes, drop)
    messenger = LocalMessenger(grid)
    strategy = BackboneFedAvg(weighting=weighting)
    rounds = PrivateRounds(grid, settings_of(cfg), strategy, roster, messenger)
    groups = roster.groups()
    backbones = GroupBackbones({g: backbone() for g in groups}, "float32")
    reports, record = rounds.train_round(1, groups, groups, backbones, INSTRUCTION, min_institutions, [])
    return backbones, reports, record, grid, messenger, rounds


def _plain_mean(nodes, weighting, method="uml"):
    """What the plain run's BackboneFedAvg makes of the same replies, per group."""
    strategy = BackboneFedAvg(weighting=weighting)
    grid = LocalGrid(toy_app(EXAMPLES, mods=[]), nodes)
    out = {}
    groups = {"uml": list(nodes)} if method == "uml" else {
        m: [n for n in nodes if MODALITY[n] == m] for m in ("sar", "rgb")}
    for g, members in groups.items():
        replies = [grid.deliver(protocol_message(n)) for n in members]
        agg = strategy.aggregate(1, replies, [MODALITY[n] for n in members])
        out[g] = {k: torch.from_numpy(v.numpy()) for k, v in agg.items()}
    return out


def protocol_message(n):
    from flwr.app import Message

    from fed_uml.federated.transfer import to_wire
    return Message(content=INSTRUCTION.content(to_wire(backbone())), message_type=protocol.TRAIN, dst_node_id=n)


def _tolerance(record, group, tensors) -> float:
    """The stated quantisation bound plus the float32 rounding of the result."""
    top = max(float(t.abs().max()) for t in tensors.values())
    return record["secure_quantisation_bound"][group] + 2 * float(np.finfo(np.float32).eps) * top


@pytest.mark.parametrize("weighting", ["examples", "modality"])
@pytest.mark.parametrize("method", ["uml", "unimodal"])
def test_secure_mean_equals_plain_mean_within_the_quantisation_bound(weighting, method):
    backbones, reports, record, _, _, _ = _round([], weighting, method=method)
    plain = _plain_mean(tuple(EXAMPLES), weighting, method)
    assert set(backbones.tensors) == set(plain)
    for g in plain:
        diff = max_abs_diff(backbones.tensors[g], plain[g])
        assert diff <= _tolerance(record, g, plain[g]), (g, diff, record["secure_quantisation_bound"][g])
        # the plain mean really moved: the comparison is not between two unchanged backbones
        assert max_abs_diff(plain[g], backbone()) > 0.01
    # bound as stated: K * 2c / (Q * sum of weights over the largest), 2c/Q = 4.77e-7 with c=1, Q=2**22
    assert record["secure_quantisation_bound"]["uml" if method == "uml" else "sar"] < 5e-6
    assert sorted(reports) == sorted(EXAMPLES) and record["secure_range_exceeded"] == 0


def test_the_server_never_holds_an_institution_backbone_in_the_clear():
    backbones, _, record, grid, _, _ = _round([])
    assert record["secure_arrays_in_clear"] == 0
    # every reply the server received: no array record holds an array
    masked = []
    for reply in grid.received:
        for rec in reply.content.array_records.values():
            assert len(rec) == 0
        configs = reply.content.config_records.get("secaggplus_configs")
        if configs is not None and "masked_params" in configs:
            masked.append(configs["masked_params"])
    assert len(masked) == len(EXAMPLES)
    # a masked vector is uncorrelated with the update it hides
    from flwr.common import bytes_to_ndarray
    vec = np.concatenate([bytes_to_ndarray(b).ravel() for b in masked[0][1:]]).astype(np.float64)
    upd = np.concatenate([update_for(n)[k].numpy().ravel() for n in [list(EXAMPLES)[0]] for k in sorted(update_for(n))])
    assert abs(np.corrcoef(vec[: upd.size], upd)[0, 1]) < 0.1


def test_an_institution_dropped_mid_round_is_recovered_from_its_neighbours_shares():
    dropped = 13
    backbones, reports, record, _, messenger, _ = _round([], drop={dropped: "collect-masked-vectors"})
    survivors = [n for n in EXAMPLES if n != dropped]
    plain = _plain_mean(tuple(survivors), "examples")["uml"]
    assert max_abs_diff(backbones.tensors["uml"], plain) <= _tolerance(record, "uml", plain)
    assert record["secure_summed"] == 4 and dropped not in reports
    stages = [(f["node_id"], f["stage"]) for f in messenger.failures]
    assert stages == [(dropped, "train.secagg+.collect-masked-vectors")]


def test_too_many_dropped_institutions_halt_the_round_cleanly():
    # 3 of 5 gone after training: the survivors' neighbours hold fewer shares than the
    # threshold (0.8 of 5 shares = 4), so the sum cannot be unmasked: the backbone stays
    overrides = ["federated.secure_reconstruction_threshold=0.8"]
    backbones, _, record, _, messenger, _ = _round(overrides, drop={13: "unmask", 14: "unmask"})
    assert record["secure_halted"] == {"uml": "unmask"}
    assert max_abs_diff(backbones.tensors["uml"], backbone()) == 0
    assert {f["node_id"] for f in messenger.failures} == {13, 14}


def test_a_round_below_min_institutions_fails_with_a_clear_error():
    with pytest.raises(FederationError, match="fewer than federated.min_institutions=5"):
        _round([], drop={13: "setup"}, min_institutions=5)


@pytest.mark.parametrize("overrides, nodes, match", [
    (["federated.secure_reconstruction_threshold=4"], (11, 12, 13), "fewer than the reconstruction threshold 4"),
    ([], (11,), "needs at least 2 institutions"),
    (["federated.secure_quantization_range=2147483648"], (11, 12, 13), "overflow the modulus"),
])
def test_secure_rounds_it_cannot_run_are_refused(overrides, nodes, match):
    with pytest.raises(ValueError, match=match):
        _round(overrides, nodes=nodes)
