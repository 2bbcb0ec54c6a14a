"""The ClientApp's handlers, called directly with hand-made Messages (no runtime)."""

from unittest import mock

import pytest
import torch
from flwr.app import ArrayRecord

from clients.client_app import calibrate, describe, train
from fed_uml.federated import protocol
from fed_uml.federated.backbone import initial_backbone
from fed_uml.federated.config import config_from_run_config
from fed_uml.federated.institution import Institution
from fed_uml.federated.private_store import PrivateStateStore
from fed_uml.federated.protocol import (
    CalibrateInstruction,
    CalibrateReport,
    DescribeInstruction,
    Description,
    ModelFile,
    TrainInstruction,
    TrainReport,
)
from fed_uml.federated.roles import institution_for_node
from fed_uml.federated.transfer import from_wire
from fed_uml.results import sha256_file
from tests.flower_helpers import TINY, context, message

RUN_CONFIG = {"overrides": TINY, "seed": 3}
NODE = {"partition-id": 1, "num-partitions": 4}  # round-robin: sar, rgb, sar, rgb -> rgb-0


def _cfg(run_config=RUN_CONFIG):
    return config_from_run_config(run_config)


def _backbone():
    return ArrayRecord(initial_backbone(_cfg()))


def _describe(ctx, resumed_after_round: int = 0):
    msg = message(DescribeInstruction(resumed_after_round=resumed_after_round).content(), protocol.DESCRIBE)
    return describe(msg, ctx)


def _train(ctx, arrays: ArrayRecord, server_round: int, local_steps: int = 0):
    task = TrainInstruction(server_round=server_round, num_rounds=4, local_epochs=1, local_steps=local_steps,
                            transfer_dtype="float32")
    return train(message(task.content(arrays), protocol.TRAIN), ctx)


def _calibrate(ctx, results_dir: str = "", epochs: int = 1):
    task = CalibrateInstruction(server_round=0, calibration_epochs=epochs, results_dir=results_dir)
    return calibrate(message(task.content(_backbone()), protocol.CALIBRATE), ctx)


def _institution(run_config=RUN_CONFIG, node=NODE) -> Institution:
    cfg = _cfg(run_config)
    return Institution(cfg, institution_for_node(node, cfg["dataset"]["modalities"], 0))


def test_describe_reports_the_institution_and_sets_its_initial_private_state():
    ctx = context(RUN_CONFIG, NODE)
    reply = _describe(ctx)
    d = Description.from_content(reply.content)
    assert (d.modality, d.institution) == ("rgb", "rgb-0")
    assert d.n_train == 4 * 10 // 2 and d.num_classes == 10 and d.in_channels == 3
    assert list(reply.content.keys()) == [protocol.DESCRIPTION]
    private = ctx.state["private"].to_torch_state_dict()
    initial = _institution().initial_private_state()
    assert set(private) == set(initial) and all(torch.equal(private[k], initial[k]) for k in initial)


def test_train_sends_only_backbone_and_keeps_private_state():
    ctx = context(RUN_CONFIG, NODE)
    _describe(ctx)
    sent = _backbone()
    reply = _train(ctx, sent, 1)
    arrays = reply.content[protocol.ARRAYS]
    assert set(arrays.keys()) == set(sent.keys())
    assert all(k.startswith("backbone.") and "running" not in k and "num_batches" not in k for k in arrays.keys())
    # the backbone moved, the private state stayed home
    before, after = sent.to_torch_state_dict(), arrays.to_torch_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    private = ctx.state["private"].to_torch_state_dict()
    assert any(k.startswith("projections.rgb.") for k in private)
    assert any(k.endswith("running_mean") for k in private)
    assert not set(private) & set(arrays.keys())
    report = TrainReport.from_content(reply.content)
    assert report.num_examples == 20 and 0.0 <= report.train_accuracy <= 1.0
    assert set(reply.content[protocol.METRICS].keys()) == set(report.to_dict())  # scalars about the work only


def test_round_2_starts_from_the_private_state_of_round_1():
    """The round-2 reply is what training from the round-1 private state gives, not what
    training from the initial projection gives (which is what ignoring the state would do)."""
    ctx = context(RUN_CONFIG, NODE)
    _describe(ctx)
    arrays1 = _train(ctx, _backbone(), 1).content[protocol.ARRAYS]
    private1 = ctx.state["private"].to_torch_state_dict()
    got = _train(ctx, arrays1, 2).content[protocol.ARRAYS].to_torch_state_dict()

    inst, backbone1 = _institution(), from_wire(arrays1)
    kept, _, _ = inst.fit(backbone1, private1, 2, 1, num_rounds=4, local_steps=0)
    ignored, _, _ = inst.fit(backbone1, None, 2, 1, num_rounds=4, local_steps=0)
    assert any(not torch.equal(kept[k], ignored[k]) for k in kept), "the private state makes no difference here"
    assert all(torch.equal(got[k], kept[k]) for k in kept), "round 2 did not start from the private state of round 1"


def test_train_uses_the_schedule_the_server_sent():
    ctx = context(RUN_CONFIG, NODE)  # the run config says local-steps=0
    _describe(ctx)
    report = TrainReport.from_content(_train(ctx, _backbone(), 1, local_steps=3).content)
    assert report.optimizer_steps == 3


def test_a_node_that_lost_its_private_state_fails_loudly():
    ctx = context(RUN_CONFIG, NODE)
    _describe(ctx)
    arrays1 = _train(ctx, _backbone(), 1).content[protocol.ARRAYS]
    lost = context(RUN_CONFIG, NODE)  # e.g. a restarted SuperNode: context.state is empty
    with pytest.raises(RuntimeError, match="no private state after round 1"):
        _train(lost, arrays1, 2)


def test_resume_with_partial_participation_restores_the_latest_state(tmp_path):
    """fraction-train < 1: the institution trained round 1 only; the run stopped after round 3
    and resumes. It restores its round-1 state (it has none of rounds 2-3) and its round-4
    reply equals that of the uninterrupted run; an abandoned round-4 file is dropped."""
    node = {**NODE, "state-dir": str(tmp_path / "state")}
    store = PrivateStateStore(tmp_path / "state", "rgb-0")
    straight = context(RUN_CONFIG, node)
    _describe(straight)
    assert store.rounds() == [0]
    arrays1 = _train(straight, _backbone(), 1).content[protocol.ARRAYS]
    assert store.rounds() == [0, 1]
    expected = _train(straight, arrays1, 4).content[protocol.ARRAYS].to_torch_state_dict()
    assert store.rounds() == [1, 4]  # round 4 and the newest before it
    store.path(4).rename(store.path(7))  # stands in for a round trained after the checkpoint

    resumed = context(RUN_CONFIG, node)  # a new run: empty context.state
    _describe(resumed, resumed_after_round=3)
    assert store.rounds() == [1]
    state1 = torch.load(store.path(1), weights_only=True)
    assert all(torch.equal(resumed.state["private"].to_torch_state_dict()[k], v) for k, v in state1.items())
    got = _train(resumed, arrays1, 4).content[protocol.ARRAYS].to_torch_state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_resume_of_an_institution_that_never_trained(tmp_path):
    node = {**NODE, "state-dir": str(tmp_path / "state")}
    _describe(context(RUN_CONFIG, node))  # a new run; then never sampled before it stopped
    resumed = context(RUN_CONFIG, node)
    _describe(resumed, resumed_after_round=2)
    initial = _institution().initial_private_state()
    private = resumed.state["private"].to_torch_state_dict()
    assert all(torch.equal(private[k], initial[k]) for k in initial)


def test_resume_without_its_private_state_fails(tmp_path):
    with pytest.raises(RuntimeError, match="no state-dir is set"):
        _describe(context(RUN_CONFIG, NODE), resumed_after_round=2)
    with pytest.raises(FileNotFoundError, match="no private state of round 2 or before"):
        _describe(context(RUN_CONFIG, {**NODE, "state-dir": str(tmp_path / "empty")}), resumed_after_round=2)


def test_calibrate_query_reports_before_and_after():
    ctx = context(RUN_CONFIG, NODE)
    reply = _calibrate(ctx)
    report = CalibrateReport.from_content(reply.content)
    assert report.num_examples == 3 * 10 // 2
    assert 0.0 <= report.accuracy_before_calibration <= 1.0 and 0.0 <= report.accuracy_after_calibration <= 1.0
    assert list(reply.content.keys()) == [protocol.METRICS]
    assert not report.model_saved  # no state-dir, model-dir or results-dir: nowhere to write it


def test_calibrate_uses_the_epochs_the_server_sent():
    import fed_uml.federated.institution as institution

    with mock.patch.object(institution, "calibrate_modality", wraps=institution.calibrate_modality) as spy:
        _calibrate(context(RUN_CONFIG, NODE), epochs=2)
    assert spy.call_args.kwargs["epochs"] == 2  # the run config says calibration.epochs=1


@pytest.mark.parametrize("where", ["state-dir", "model-dir", "run-config state-dir", "server default"])
def test_calibrate_writes_the_model_to_the_node_only(tmp_path, where):
    from fed_uml.model_file import load_model
    from fed_uml.training import evaluate

    run_config, node = dict(RUN_CONFIG), dict(NODE)
    expected = {
        "state-dir": tmp_path / "node" / "rgb-0" / "model-rgb.pt",
        "model-dir": tmp_path / "models" / "model-rgb.pt",
        "run-config state-dir": tmp_path / "state" / "rgb-0" / "model-rgb.pt",
        "server default": tmp_path / "srv" / "institutions" / "rgb-0" / "model-rgb.pt",
    }[where]
    if where == "state-dir":
        node["state-dir"] = str(tmp_path / "node")
    elif where == "model-dir":
        node["model-dir"] = str(tmp_path / "models")
    elif where == "run-config state-dir":
        run_config["state-dir"] = str(tmp_path / "state")
    reply = _calibrate(context(run_config, node), results_dir=str(tmp_path / "srv"))
    report = CalibrateReport.from_content(reply.content)
    # a flag and the file's digest, never the model
    assert report.model_saved and list(reply.content.keys()) == [protocol.METRICS, protocol.MODEL_FILE]
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [expected]
    recorded = ModelFile.from_content(reply.content)
    assert recorded.sha256 == sha256_file(expected) and recorded.bytes == expected.stat().st_size
    assert recorded.path == ("institutions/rgb-0/model-rgb.pt" if where == "server default" else "")
    saved = load_model(expected, modality="rgb", bands=("B04", "B03", "B02"))
    assert saved.source["institution"] == "rgb-0" and saved.source["federated"] and saved.calibrated
    # the file is the h_k the institution evaluated: same accuracy on its local test share (3 per class / 2)
    inst = _institution(run_config, node)
    assert saved.band_mean.tolist() == inst.data.info["band_mean"]
    assert evaluate(saved.model, inst.test) == pytest.approx(report.accuracy_after_calibration, abs=1e-6)


def test_an_institution_standardises_with_the_statistics_of_its_own_share():
    """Each institution scales its data by the per-band mean/std of ITS training images (it
    holds no other data): mean ~0 and std ~1 per band over its own share; two institutions
    of the same modality use different statistics, neither the whole modality's."""
    from fed_uml.data import load_dataset
    from fed_uml.data.normalize import band_stats, normalize

    cfg = _cfg()
    sar = [Institution(cfg, institution_for_node({"partition-id": p, "num-partitions": 4},
                                                 cfg["dataset"]["modalities"], 0)) for p in (0, 2)]
    assert [i.ident.name for i in sar] == ["sar-0", "sar-1"]
    for inst in sar:
        mean, std = band_stats(inst.train.images)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
        torch.testing.assert_close(std, torch.ones_like(std), atol=1e-4, rtol=0)
        assert inst.data.info["band_mean"] and len(inst.data.info["band_std"]) == inst.data.channels
    a, b = (torch.tensor(i.data.info["band_mean"]) for i in sar)
    assert not torch.allclose(a, b), "two institutions of a modality share their statistics"
    whole = load_dataset({**cfg["dataset"], "modalities": ["sar"]})["sar"].info["band_mean"]
    assert all(not torch.allclose(torch.tensor(whole), m) for m in (a, b))
    # the test share is scaled with the same (training) statistics
    raw = load_dataset({**cfg["dataset"], "modalities": ["sar"]}, normalize=False)["sar"]
    inst = sar[0]
    scaled = normalize(raw.test.images, *(torch.tensor(inst.data.info[k]) for k in ("band_mean", "band_std")))
    for x in inst.test.images:
        assert (scaled - x).abs().amax(dim=(1, 2, 3)).min() < 1e-5
