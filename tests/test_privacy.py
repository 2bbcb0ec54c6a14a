"""Institution-level differential privacy: bad settings refused, the accountant against a
published value, clipping of an institution's update, noise on the aggregate and epsilon in
every round's record (plain and secure paths)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from fed_uml.federated.config import compose_config
from fed_uml.federated.protocol import ClipInstruction, TrainInstruction
from fed_uml.federated.transfer import from_wire, to_wire
from fed_uml.privacy import clip_update, global_norm, privacy_settings, secure_settings
from fed_uml.privacy.accountant import PrivacyAccountant, epsilon
from fed_uml.schema import settings_of
from server.roster import Member, Roster
from server.rounds import GroupBackbones
from server.secure import PrivateRounds
from server.strategy import BackboneFedAvg
from tests.privacy_helpers import LocalGrid, LocalMessenger, backbone, server_process, toy_app, update_for

EXAMPLES = {11: 10, 12: 20, 13: 30, 14: 45}


def _fed(*overrides):
    return compose_config(list(overrides))["federated"]


@pytest.mark.parametrize("overrides, match", [
    (["federated.dp_noise_multiplier=-1.0"], "dp_noise_multiplier must be >= 0"),
    (["federated.dp_noise_multiplier=1.0"], "needs a clipping norm: dp_clipping_norm is 0"),
    (["federated.dp_clipping_norm=-0.5"], "dp_clipping_norm must be > 0"),
    (["federated.dp_clipping_norm=1.0", "federated.transfer_dtype=float16"], "needs transfer_dtype=float32"),
    (["federated.dp_clipping_norm=1.0", "federated.dp_clipping=median"], "dp_clipping must be one of"),
    (["federated.dp_clipping_norm=1.0", "federated.dp_delta=0.0"], "dp_delta must lie in"),
])
def test_bad_privacy_settings_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        privacy_settings(_fed(*overrides))


@pytest.mark.parametrize("overrides, match", [
    (["federated.secure_modulus_range=1000000"], "power of 2"),
    (["federated.secure_clipping_range=0.0"], "secure_clipping_range must be > 0"),
    (["federated.secure_num_shares=3", "federated.secure_reconstruction_threshold=3"], "must be less than"),
    (["federated.secure_num_shares=1.5"], r"fraction must lie in \(0, 1\]"),
])
def test_bad_secure_settings_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        secure_settings(_fed(*overrides))


def test_defaults_switch_nothing_on():
    assert not privacy_settings(_fed()).enabled and not secure_settings(_fed()).enabled


def test_accountant_matches_published_values():
    # dp-accounting's own test (rdp_privacy_accountant_test.test_compute_epsilon_delta_gaussian):
    # by the Renyi-DP accountant, noise multiplier 4.530877117 gives (1, 1e-6)-DP for one
    # Gaussian release of sensitivity 1 (q = 1: one round, every institution sampled)
    sigma = 4.530877117
    eps = epsilon([(1.0, sigma)], 1e-6)
    assert eps == pytest.approx(1.0, abs=0.01)
    # and it is a valid, tight upper bound: the exact privacy curve of the Gaussian mechanism
    # (Balle & Wang, ICML 2018, Theorem 8) gives delta(eps) = Phi(1/(2 sigma) - eps sigma) -
    # e^eps Phi(-1/(2 sigma) - eps sigma) <= 1e-6 at that eps, and > 1e-6 at 0.9 eps
    def exact_delta(e):
        return norm.cdf(1 / (2 * sigma) - e * sigma) - math.exp(e) * norm.cdf(-1 / (2 * sigma) - e * sigma)
    assert exact_delta(eps) <= 1e-6 < exact_delta(0.9 * eps)
    # T rounds of noise z compose like one Gaussian of noise z / sqrt(T) (q = 1): 25 rounds at 5 * sigma
    assert epsilon([(1.0, 5 * sigma)] * 25, 1e-6) == pytest.approx(1.0, abs=0.01)
    # subsampling amplifies, more rounds cost more, no noise is no privacy
    assert epsilon([(0.1, 1.0)] * 10, 1e-5) < epsilon([(1.0, 1.0)] * 10, 1e-5)
    assert epsilon([(0.1, 1.0)] * 20, 1e-5) > epsilon([(0.1, 1.0)] * 10, 1e-5)
    assert epsilon([(1.0, 0.0)], 1e-5) == math.inf


def test_accountant_takes_the_largest_group_and_resumes_from_history():
    acc = PrivacyAccountant(1e-5)
    acc.record("sar", 1.0, 2.0)
    acc.record("rgb", 0.5, 2.0)
    assert acc.epsilon() == pytest.approx(epsilon([(1.0, 2.0)], 1e-5))
    again = PrivacyAccountant(1e-5)
    again.restore([{"dp_steps": {"sar": [1.0, 2.0], "rgb": [0.5, 2.0]}}])
    assert again.epsilon() == acc.epsilon()


def test_clip_update_bounds_the_whole_update():
    rng = np.random.default_rng(0)
    update = {"a": rng.normal(size=(30, 20)), "b": rng.normal(size=100)}
    clipped, within = clip_update(update, 1.0)
    assert not within and global_norm(clipped) <= 1.0 and global_norm(clipped) == pytest.approx(1.0)
    small, within = clip_update({k: v * 1e-3 for k, v in update.items()}, 1.0)
    assert within and np.array_equal(small["a"], update["a"] * 1e-3)


def test_dp_clip_mod_clips_what_leaves_the_institution():
    from flwr.app import Message

    from fed_uml.federated import protocol
    from tests.flower_helpers import context, message
    app = toy_app({1: 10})
    content = TrainInstruction(server_round=1, num_rounds=1, local_epochs=1, local_steps=0,
                               transfer_dtype="float32").content(to_wire(backbone()))
    ClipInstruction(clipping_norm=0.5, adaptive=True).add_to(content)
    ctx = context({}, {})
    reply = app(message(content, protocol.TRAIN, dst_node_id=1), ctx)
    assert isinstance(reply, Message)
    sent = from_wire(reply.content[protocol.ARRAYS])
    update = {k: (sent[k] - backbone()[k]).double().numpy() for k in sent}
    assert global_norm(update) <= 0.5 + 1e-5
    assert global_norm({k: v.numpy() for k, v in update_for(ctx.node_id).items()}) > 5  # it was clipped
    assert reply.content[protocol.METRICS][protocol.DP_UNCLIPPED] == 0.0


def _dp_round(secure: bool, noise: float, clip: float, server_round: int = 1, extra=()):
    cfg = compose_config([f"federated.secure_aggregation={'true' if secure else 'false'}",
                          f"federated.dp_noise_multiplier={noise}", f"federated.dp_clipping_norm={clip}", *extra])
    roster = Roster(["sar", "rgb"], 10, "uml")
    for i, n in enumerate(EXAMPLES):
        roster.members[n] = Member(n, ["sar", "rgb"][i % 2], f"inst-{n}", EXAMPLES[n], 5)
    grid = LocalGrid(toy_app(EXAMPLES), EXAMPLES)
    rounds = PrivateRounds(grid, settings_of(cfg), BackboneFedAvg(weighting="examples"), roster, LocalMessenger(grid))
    groups = roster.groups()
    backbones = GroupBackbones({"uml": backbone()}, "float32")
    ins = TrainInstruction(server_round=server_round, num_rounds=3, local_epochs=1, local_steps=0,
                           transfer_dtype="float32")
    with server_process():
        _, record = rounds.train_round(server_round, groups, groups, backbones, ins, 2, [])
    return backbones.tensors["uml"], record


@pytest.mark.parametrize("secure", [False, True])
def test_dp_round_clips_noises_and_records_epsilon(secure):
    # no noise: the new backbone is the weighted mean of the clipped updates (norm <= C each)
    clean, rec0 = _dp_round(secure, 0.0, 0.5)
    step = {k: (clean[k] - backbone()[k]).double().numpy() for k in clean}
    assert global_norm(step) <= 0.5 + 1e-4
    assert rec0["dp_epsilon"] == math.inf and rec0["dp_noise_stddev"] == 0
    # noise z = 2: stddev z*C on the sum of weights (over the largest) -> per element z*C/W
    noisy, rec = _dp_round(secure, 2.0, 0.5)
    w = np.array(list(EXAMPLES.values()), dtype=float)
    expected_std = 2.0 * 0.5 / (w / w.max()).sum()
    diff = np.concatenate([(noisy[k] - clean[k]).double().numpy().ravel() for k in noisy])
    assert diff.std() == pytest.approx(expected_std, rel=0.1)
    assert rec["dp_noise_stddev"] == pytest.approx(1.0)
    assert rec["dp_epsilon"] == pytest.approx(epsilon([(1.0, 2.0)], 1e-5)) and rec["dp_delta"] == 1e-5
    assert rec["dp_steps"] == {"uml": [1.0, 2.0]}


def test_adaptive_clipping_moves_the_norm_towards_the_quantile():
    # every toy update (norm ~ 10) is above C = 0.5: the unclipped fraction is 0 < 0.5, C grows
    _, rec = _dp_round(True, 0.0, 0.5, extra=["federated.dp_clipping=adaptive"])
    assert rec["dp_clipping_norm"] == 0.5
    assert rec["dp_clipping_norm_next"] == pytest.approx(0.5 * math.exp(0.2 * 0.5))


def test_privacy_utility_tables_and_plot(tmp_path):
    from experiments.privacy_utility import cost_row, cost_table, plot, utility_rows, write_csv

    rows = []
    for method, base in (("uml", 0.8), ("unimodal", 0.7)):
        for z, eps in ((0.0, math.inf), (1.0, 5.0), (2.0, 1.0)):
            res = {"history": [{"dp_epsilon": eps}], "modalities": {
                "sar": {"accuracy_after_calibration": base - 0.05 * z, "accuracy_before_calibration": 0.5},
                "rgb": {"accuracy_after_calibration": base - 0.02 * z, "accuracy_before_calibration": 0.5}}}
            rows += utility_rows(res, method, 0, z)
    assert [r["epsilon"] for r in rows[:2]] == [math.inf, math.inf] and rows[2]["epsilon"] == 5.0
    plot(rows, tmp_path / "p.png")
    write_csv(tmp_path / "u.csv", rows)
    assert (tmp_path / "p.png").stat().st_size > 1000 and len((tmp_path / "u.csv").read_text().splitlines()) == 13
    hist = [{"seconds": 2.0, "participants": 8, "bytes_sent_per_institution": 100}]
    plain = cost_row({"history": hist, "_wall_s": 10.0}, 8, False)
    secure = cost_row({"history": [{"seconds": 4.0, "secure_bytes_down": 1000, "secure_bytes_up": 3000}],
                       "_wall_s": 20.0}, 8, True)
    assert plain["bytes_per_round"] == 1600 and secure["bytes_per_round"] == 4000
    assert "2.00x, 2.50x" in cost_table([plain, secure])
