"""Flower ClientApp: one institution holding one modality's local data.

Private (kept in `context.state`, never sent): the projection and all BN running
statistics. Sent: the backbone parameters and scalar metrics. Message types:
`query.describe` (sizes and modality index), `train`, `evaluate`, `query.calibrate`. After
calibration each institution writes its model h_k to its own disk (`model_dir`); the reply
says only whether it did (`model-saved`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fed_uml.federated.audit import audit_mod
from fed_uml.federated.config import config_from_run_config
from fed_uml.federated.institution import Institution
from fed_uml.federated.institutions import institution_for_node
from fed_uml.federated.private_store import PrivateStateStore
from fed_uml.federated.transfer import from_wire, to_wire

app = ClientApp(mods=[audit_mod])
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


def _store(context: Context, inst: Institution) -> PrivateStateStore | None:
    state_dir = context.node_config.get("state-dir") or inst.cfg["federated"].get("state_dir")
    return PrivateStateStore(state_dir, inst.ident.name) if state_dir else None


def _private(context: Context, inst: Institution, last_round: int):
    """This institution's private state after `last_round`: from `context.state` within a
    run, else (a resumed run) from its node-local store; None before round 1."""
    if _PRIVATE in context.state:
        return context.state[_PRIVATE].to_torch_state_dict()
    store = _store(context, inst)
    if last_round > 0 and store is not None:
        return store.load(last_round)
    if last_round > 0 and inst.cfg["federated"].get("resume"):
        raise RuntimeError(f"institution {inst.ident.name}: resuming after round {last_round} needs its private "
                           "state, but no state-dir is set")
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
    server_round = int(config["server-round"])
    shared, private, metrics = inst.fit(
        backbone, _private(context, inst, server_round - 1), server_round, int(config["local-epochs"])
    )
    context.state[_PRIVATE] = ArrayRecord(private)
    store = _store(context, inst)
    if store is not None:
        store.save(server_round, private)
    return _reply(msg, metrics, to_wire(shared, str(config.get("transfer-dtype", "float32"))))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    inst = _institution(context)
    last = int(msg.content["config"]["server-round"])
    return _reply(msg, inst.evaluate(from_wire(msg.content["arrays"]), _private(context, inst, last)))


def model_dir(context: Context, inst: Institution, config) -> Path | None:
    """Where this institution writes its model (node-local, never sent), first that is set:
    node-config `model-dir` (the folder itself); node-config or run-config `state-dir`
    (`<state-dir>/<institution>/`, beside its private round state); else the folder the
    server suggests, `<results-dir>/institutions/<institution>/` (in a simulation the run's
    results folder stands in for every institution's own disk)."""
    node_dir = context.node_config.get("model-dir")
    if node_dir:
        return Path(str(node_dir)).expanduser()
    state_dir = context.node_config.get("state-dir") or inst.cfg["federated"].get("state_dir")
    if state_dir:
        return Path(str(state_dir)).expanduser() / inst.ident.name
    suggested = config.get("results-dir")
    if suggested:
        return Path(str(suggested)).expanduser() / "institutions" / inst.ident.name
    return None


@app.query("calibrate")
def calibrate(msg: Message, context: Context) -> Message:
    inst = _institution(context)
    config = msg.content["config"]
    last = int(config["server-round"])
    metrics = inst.calibrate(from_wire(msg.content["arrays"]), _private(context, inst, last),
                             model_dir=model_dir(context, inst, config))
    return _reply(msg, metrics)
