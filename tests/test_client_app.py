"""The ClientApp's handlers, called directly with hand-made Messages (no runtime)."""

import pytest
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
    assert m["model-saved"] == 0  # no state-dir, model-dir or results-dir: nowhere to write it


@pytest.mark.parametrize("where", ["state-dir", "model-dir", "run-config state-dir", "server default"])
def test_calibrate_writes_the_model_to_the_node_only(tmp_path, where):
    from fed_uml.data import load_dataset
    from fed_uml.model_file import load_model
    from fed_uml.training import evaluate

    run_config, node, config = dict(RUN_CONFIG), dict(NODE), {"server-round": 0, "results-dir": str(tmp_path / "srv")}
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
    ctx = context(run_config, node)
    reply = calibrate(message(RecordDict({"arrays": _backbone(), "config": ConfigRecord(config)}),
                              f"{MessageType.QUERY}.calibrate"), ctx)
    m = reply.content["metrics"]
    assert m["model-saved"] == 1 and list(reply.content.keys()) == ["metrics"]  # a flag, never the model
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [expected]
    saved = load_model(expected, modality="rgb", bands=("B04", "B03", "B02"))
    assert saved.source["institution"] == "rgb-0" and saved.source["federated"] and saved.calibrated
    # the file is the h_k the institution evaluated: same accuracy on its local test share (3 per class / 2)
    cfg = config_from_run_config(run_config)
    data = load_dataset({**cfg["dataset"], "modalities": ["rgb"]})["rgb"]
    assert saved.band_mean.tolist() == data.info["band_mean"]
    from fed_uml.federated.institution import Institution
    from fed_uml.federated.institutions import institution_for_node

    inst = Institution(cfg, institution_for_node(node, cfg["dataset"]["modalities"], 0))
    assert evaluate(saved.model, inst.test) == pytest.approx(m["accuracy-after-calibration"], abs=1e-6)
