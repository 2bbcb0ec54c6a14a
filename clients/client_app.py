"""Flower ClientApp: one institution holding one modality's local data.

Private (kept in `context.state`, never sent): the projection and all BN running
statistics. Sent: the backbone parameters and scalar metrics. Message types:
`query.describe` (sizes and modality index), `train`, `evaluate`, `query.calibrate`.
"""

from __future__ import annotations

import logging

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fed_uml.federated.audit import audit_mod
from fed_uml.federated.config import config_from_run_config
from fed_uml.federated.institution import Institution
from fed_uml.federated.institutions import institution_for_node
from fed_uml.federated.logs import route_to_flower
from fed_uml.federated.transfer import from_wire, to_wire

app = ClientApp(mods=[audit_mod])
log = logging.getLogger(__name__)
route_to_flower(logging.WARNING)
_PRIVATE = "private"


def _institution(context: Context) -> Institution:
    cfg = config_from_run_config(context.run_config)
    threads = int(cfg.get("num_threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    ident = institution_for_node(
        context.node_config, cfg["dataset"]["modalities"], cfg["federated"]["institutions_per_modality"]
    )
    return Institution(cfg, ident)


def _private(context: Context):
    if _PRIVATE in context.state:
        return context.state[_PRIVATE].to_torch_state_dict()
    return None


def _reply(msg: Message, metrics: dict, arrays: ArrayRecord | None = None) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content, reply_to=msg)


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    return _reply(msg, _institution(context).describe())


@app.train()
def train(msg: Message, context: Context) -> Message:
    inst = _institution(context)
    config = msg.content["config"]
    backbone = from_wire(msg.content["arrays"])
    shared, private, metrics = inst.fit(
        backbone, _private(context), int(config["server-round"]), int(config["local-epochs"])
    )
    context.state[_PRIVATE] = ArrayRecord(private)
    return _reply(msg, metrics, to_wire(shared, str(config.get("transfer-dtype", "float32"))))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    inst = _institution(context)
    return _reply(msg, inst.evaluate(from_wire(msg.content["arrays"]), _private(context)))


@app.query("calibrate")
def calibrate(msg: Message, context: Context) -> Message:
    inst = _institution(context)
    return _reply(msg, inst.calibrate(from_wire(msg.content["arrays"]), _private(context)))
