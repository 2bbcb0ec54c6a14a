"""The server's windowed send: never more than the window in flight, every reply matched to
its message, failures (error replies, timeouts) recorded with the node that caused them."""

from __future__ import annotations

import time
import uuid

import pytest
from flwr.app import ConfigRecord, Error, Message, Metadata, RecordDict

from fed_uml.federated.protocol import EvaluateInstruction
from server.messaging import SIMULATION_WINDOW, Messenger, window_for


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """A ServerApp's process identity, as Flower's runtime sets it (messages need a run id)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


class FakeGrid:
    """A grid whose nodes answer after `delay` polls; `silent` nodes never answer and
    `failing` nodes answer with an error. Records the most messages ever in flight."""

    def __init__(self, silent=(), failing=(), delay=2):
        self.silent, self.failing, self.delay = set(silent), set(failing), delay
        self.in_flight: dict[str, tuple[Message, int]] = {}
        self.most_in_flight = 0
        self.order: list[int] = []

    def push_messages(self, messages):
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self.in_flight[m.metadata.message_id] = (m, 0)
            self.order.append(m.metadata.dst_node_id)
            ids.append(m.metadata.message_id)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return ids

    def pull_messages(self, message_ids):
        out = []
        for msg_id in message_ids:
            m, polls = self.in_flight[msg_id]
            node = m.metadata.dst_node_id
            if node in self.silent or polls < self.delay:
                self.in_flight[msg_id] = (m, polls + 1)
                continue
            md = Metadata(run_id=1, message_id=f"r{msg_id}", src_node_id=node, dst_node_id=0,
                          reply_to_message_id=msg_id, group_id="", created_at=time.time(), ttl=60.0,
                          message_type=m.metadata.message_type)
            if node in self.failing:
                out.append(Message(metadata=md, error=Error(code=0, reason=f"Traceback\nValueError: node {node}")))
            else:
                out.append(Message(metadata=md, content=RecordDict({"echo": ConfigRecord({"node": node})})))
            del self.in_flight[msg_id]
        return out


def test_the_window_bounds_messages_in_flight_and_every_reply_finds_its_node():
    grid = FakeGrid()
    replies = Messenger(grid, 60, str, max_in_flight=3).send({n: None for n in range(10)}, "evaluate",
                                                              EvaluateInstruction(server_round=1), 1)
    assert grid.most_in_flight == 3
    assert grid.order == list(range(10))  # sent in the order given
    assert list(replies) == list(range(10))
    assert all(r.content["echo"]["node"] == n for n, r in replies.items())


def test_unbounded_window_sends_everything_at_once():
    grid = FakeGrid()
    Messenger(grid, 60, str, max_in_flight=0).send({n: None for n in range(50)}, "evaluate",
                                                   EvaluateInstruction(server_round=1), 1)
    assert grid.most_in_flight == 50  # a FakeGrid is no simulation: automatic means unbounded


def test_error_replies_and_timeouts_are_failures_of_their_node():
    grid = FakeGrid(silent={4}, failing={2})
    messenger = Messenger(grid, 0.3, lambda n: f"inst-{n}", max_in_flight=2)
    replies = messenger.send({n: None for n in range(6)}, "train", EvaluateInstruction(server_round=3), 3)
    assert sorted(replies) == [0, 1, 3, 5]
    failed = {f["node_id"]: f for f in messenger.failures}
    assert set(failed) == {2, 4}
    assert failed[2]["error"] == "ValueError: node 2" and failed[2]["institution"] == "inst-2"
    assert failed[4]["error"] == "no reply before the timeout" and failed[4]["round"] == 3


def test_window_setting():
    class InMemoryGrid:  # named like Flower's simulation grid
        pass

    assert window_for(InMemoryGrid(), 0) == SIMULATION_WINDOW
    assert window_for(FakeGrid(), 0) is None
    assert window_for(FakeGrid(), 5) == 5
    with pytest.raises(ValueError, match="federated.max_in_flight"):
        window_for(FakeGrid(), -1)
