"""The ClientApp's handlers, called directly with hand-made Messages (no runtime)."""

import torch
from flwr.app import ArrayRecord, ConfigRecord, MessageType, RecordDict

from clients.client_app import calibrate, describe, train
from fed_uml.federated.backbone import initial_backbone
from fed_uml.federated.config import config_from_run_config
from tests.flower_helpers import TINY, context, message

RUN_CONFIG = {"overrides": TINY, "seed": 3}
NODE = {"partition-id": 1, "num-partitions": 4}  # round-robin: sar, rgb, sar, rgb -> rgb-0


def _backbone():
    return ArrayRecord(initial_backbone(config_from_run_config(RUN_CONFIG)))


def test_describe_reports_the_institution():
    reply = describe(message(RecordDict({"config": ConfigRecord({})}), f"{MessageType.QUERY}.describe"),
                     context(RUN_CONFIG, NODE))
    m = reply.content["metrics"]
    assert m["modality-index"] == 1  # rgb
    assert m["institution-index"] == 0
    assert m["n-train"] == 4 * 10 // 2 and m["num-classes"] == 10 and m["in-channels"] == 3


def test_train_sends_only_backbone_and_keeps_private_state():
    ctx = context(RUN_CONFIG, NODE)
    sent = _backbone()
    msg = message(RecordDict({"arrays": sent, "config": ConfigRecord({"server-round": 1, "local-epochs": 1})}),
                  MessageType.TRAIN)
    reply = train(msg, ctx)
    arrays = reply.content["arrays"]
    assert set(arrays.keys()) == set(sent.keys())
    assert all(k.startswith("backbone.") and "running" not in k and "num_batches" not in k for k in arrays.keys())
    # the backbone moved, the private state stayed home
    before, after = sent.to_torch_state_dict(), arrays.to_torch_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    private = ctx.state["private"].to_torch_state_dict()
    assert any(k.startswith("projections.rgb.") for k in private)
    assert any(k.endswith("running_mean") for k in private)
    assert not set(private) & set(arrays.keys())
    m = reply.content["metrics"]
    assert m["num-examples"] == 20 and 0.0 <= m["train-accuracy"] <= 1.0

    # round 2 starts from the private state of round 1
    msg2 = message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 2, "local-epochs": 1})}),
                   MessageType.TRAIN)
    train(msg2, ctx)
    private2 = ctx.state["private"].to_torch_state_dict()
    key = next(k for k in private if k.endswith("running_mean"))
    assert not torch.equal(private[key], private2[key])


def test_calibrate_query_reports_before_and_after():
    ctx = context(RUN_CONFIG, NODE)
    reply = calibrate(message(RecordDict({"arrays": _backbone(), "config": ConfigRecord({"server-round": 0})}),
                              f"{MessageType.QUERY}.calibrate"), ctx)
    m = reply.content["metrics"]
    assert {"accuracy-before-calibration", "accuracy-after-calibration", "num-examples"} <= set(m.keys())
    assert m["num-examples"] == 3 * 10 // 2
    assert "arrays" not in reply.content
