"""In-process stand-ins for the Flower runtime in the privacy tests: a grid that delivers every
message to a ClientApp in this process (one Context per node, as a SuperNode keeps it), and a
toy ClientApp whose train handler returns a known update, under the project's privacy mods."""

from __future__ import annotations

import contextlib
import copy
import time

import numpy as np
import torch
from flwr.app import Context, Message, Metadata, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.supercore.task_identity import TaskIdentity

from clients.mods import dp_clip_mod, secure_aggregation_mod
from fed_uml.federated import protocol
from fed_uml.federated.protocol import TrainReport
from fed_uml.federated.transfer import from_wire, to_wire

SHAPES = {"backbone.a": (40, 30), "backbone.b": (300,)}


@contextlib.contextmanager
def server_process():
    """The identity Flower gives a ServerApp process (a Message built there needs a run id)."""
    before = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = before


def backbone(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}


def update_for(node_id: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + node_id)
    return {k: scale * (2 * torch.rand(s, generator=g) - 1) for k, s in SHAPES.items()}


def toy_app(examples: dict[int, int], mods=None) -> ClientApp:
    app = ClientApp(mods=[secure_aggregation_mod, dp_clip_mod] if mods is None else mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        received = from_wire(msg.content[protocol.ARRAYS])
        up = update_for(context.node_id)
        report = TrainReport(num_examples=examples[context.node_id], optimizer_steps=1, train_loss=0.5,
                             train_accuracy=0.5)
        return Message(report.content(to_wire({k: received[k] + up[k] for k in received})), reply_to=msg)

    return app


class LocalGrid:
    """Runs every message through `app` in this process; `drop` = {node: SecAgg+ stage (or
    "train" for a plain train message)} at which that node stops answering."""

    def __init__(self, app: ClientApp, nodes, drop: dict[int, str] | None = None):
        self.app, self.nodes, self.drop = app, list(nodes), dict(drop or {})
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
                         for n in self.nodes}
        self.received: list[Message] = []  # every reply the server got

    def get_node_ids(self):
        return list(self.nodes)

    def _stage(self, msg: Message) -> str:
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            return str(msg.content.config_records[RECORD_KEY_CONFIGS]["stage"]).replace("_", "-")
        return "train"

    def deliver(self, msg: Message) -> Message | None:
        n = msg.metadata.dst_node_id
        if self.drop.get(n) == self._stage(msg) or n in self.drop and self.drop[n] == "gone":
            self.drop[n] = "gone"  # a dropped node stays away
            return None
        md = Metadata(run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=0, dst_node_id=n,
                      reply_to_message_id="", group_id=msg.metadata.group_id, created_at=time.time(), ttl=3600.0,
                      message_type=msg.metadata.message_type)
        reply = self.app(Message(content=copy.deepcopy(msg.content), metadata=md), self.contexts[n])
        self.received.append(reply)
        return reply

    def send_and_receive(self, messages, *, timeout=None):
        return [r for r in (self.deliver(m) for m in messages) if r is not None]


class LocalMessenger:
    """The Messenger's `send` over a LocalGrid (the plain train path), failures recorded."""

    def __init__(self, grid: LocalGrid):
        self.grid, self.failures = grid, []

    def send(self, backbones, message_type, instruction, server_round=0):
        out = {}
        for n, arrays in backbones.items():
            reply = self.grid.deliver(Message(content=instruction.content(arrays), message_type=message_type,
                                              dst_node_id=n))
            if reply is not None:
                out[n] = reply
        return out

    def record_failure(self, node_id, stage, server_round, reason):
        self.failures.append({"node_id": node_id, "stage": stage, "round": server_round, "error": reason})


def max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(a[k].double().numpy() - b[k].double().numpy()))) for k in a)
