"""Institutions that describe themselves in their first train reply ("first contact") give the
run that a `query.describe` to every institution first gives: the same roster and the same
metrics, bit for bit. The real ServerApp round driver and the real ClientApp, one Context per
node as a SuperNode keeps it, messages delivered in this process."""

from __future__ import annotations

import itertools
import time

import pytest
from flwr.app import Context, Message, Metadata, RecordDict

from clients.client_app import app
from fed_uml.federated import protocol
from fed_uml.federated.config import config_from_run_config, run_config_from_overrides
from server.rounds import FederatedRun
from tests.flower_helpers import TINY
from tests.privacy_helpers import server_process


class InProcessGrid:
    """Flower's Grid as the Messenger uses it (push, pull, node ids), answering every message
    with the project's ClientApp at once; it keeps the message types it delivered."""

    def __init__(self, n: int, run_config: dict):
        self.contexts = {node: Context(run_id=1, node_id=node, state=RecordDict(), run_config=run_config,
                                       node_config={"partition-id": node - 1, "num-partitions": n})
                         for node in range(1, n + 1)}
        self.delivered: list[str] = []
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count()

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            mid = f"m{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid
            node = msg.metadata.dst_node_id
            md = Metadata(run_id=1, message_id=mid, src_node_id=0, dst_node_id=node, reply_to_message_id="",
                          group_id=msg.metadata.group_id, created_at=time.time(), ttl=3600.0,
                          message_type=msg.metadata.message_type)
            self.delivered.append(msg.metadata.message_type)
            self._replies[mid] = app(Message(content=msg.content, metadata=md), self.contexts[node])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]


def _run(tmp_path, name: str, **run_config) -> tuple[dict, InProcessGrid]:
    overrides = TINY.split() + ["federated.num_rounds=2", "federated.evaluate_every=1"]
    rc = run_config_from_overrides(overrides, **{"results-dir": str(tmp_path / name), **run_config})
    grid = InProcessGrid(4, rc)
    with server_process():
        results = FederatedRun(grid, config_from_run_config(rc), tmp_path / name).execute()
    return results, grid


@pytest.mark.parametrize("weighting", ["examples", "modality"])
def test_first_contact_gives_the_run_of_an_upfront_describe(tmp_path, weighting):
    lazy, lazy_grid = _run(tmp_path, "lazy", weighting=weighting)
    eager, eager_grid = _run(tmp_path, "eager", weighting=weighting, **{"describe-upfront": True})
    assert protocol.DESCRIBE not in lazy_grid.delivered and lazy["timing"]["described_on_first_contact"] == 1
    assert eager_grid.delivered.count(protocol.DESCRIBE) == 4 and "described_on_first_contact" not in eager["timing"]
    assert len(lazy_grid.delivered) == len(eager_grid.delivered) - 4  # one message less per institution
    assert [i["name"] for i in lazy["institutions"]] == [i["name"] for i in eager["institutions"]]
    assert lazy["modalities"] == eager["modalities"]  # bit for bit: same private start, same averaging order
    strip = ("seconds",)
    assert ([{k: v for k, v in h.items() if k not in strip} for h in lazy["history"]]
            == [{k: v for k, v in h.items() if k not in strip} for h in eager["history"]])


def test_where_round_one_needs_the_descriptions_they_come_first(tmp_path):
    """The federated unimodal baseline averages per modality from round 1, so it must know
    every institution's modality before it trains."""
    results, grid = _run(tmp_path, "unimodal", method="unimodal")
    assert grid.delivered[:4] == [protocol.DESCRIBE] * 4 and "described_on_first_contact" not in results["timing"]


def test_a_resumed_run_restores_the_private_state_on_first_contact(tmp_path):
    """Stopped after round 1 and resumed by a new server run with new node contexts (the
    private state only in each node's state-dir): round 2's train message is the first
    contact, carries `resumed-after-round=1`, and the run ends as the uninterrupted one."""
    straight, _ = _run(tmp_path, "straight", **{"state-dir": str(tmp_path / "state-a")})
    common = {"state-dir": str(tmp_path / "state-b")}
    _run(tmp_path, "stopped", **common, **{"stop-after-round": 1})
    resumed, grid = _run(tmp_path, "stopped", **common, resume=True)
    assert protocol.DESCRIBE not in grid.delivered and resumed["timing"]["described_on_first_contact"] == 1
    assert [h["round"] for h in resumed["history"]] == [1, 2]
    assert resumed["modalities"] == straight["modalities"]
