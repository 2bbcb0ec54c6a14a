"""First contact: an institution describes itself when the server first needs it, never before.
Where the cohorts are the same (full participation), the run equals the one in which a
`query.describe` to every institution came first, bit for bit; under partial participation the
server meets only the institutions it samples. The real ServerApp round driver and the real
ClientApp, one Context per node as a SuperNode keeps it, messages delivered in this process."""

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


def _run(tmp_path, name: str, n: int = 4, extra: tuple[str, ...] = (), **run_config) -> tuple[dict, InProcessGrid]:
    overrides = TINY.split() + ["federated.num_rounds=2", "federated.evaluate_every=1", *extra]
    rc = run_config_from_overrides(overrides, **{"results-dir": str(tmp_path / name), **run_config})
    grid = InProcessGrid(n, rc)
    with server_process():
        results = FederatedRun(grid, config_from_run_config(rc), tmp_path / name).execute()
    return results, grid


@pytest.mark.parametrize("weighting", ["examples", "modality"])
def test_first_contact_gives_the_run_of_an_upfront_describe(tmp_path, weighting):
    lazy, lazy_grid = _run(tmp_path, "lazy", weighting=weighting)
    eager, eager_grid = _run(tmp_path, "eager", weighting=weighting, **{"describe-upfront": True})
    assert protocol.DESCRIBE not in lazy_grid.delivered and lazy["timing"]["described_on_first_contact"] == 4
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
    eager, _ = _run(tmp_path, "unimodal-upfront", method="unimodal", **{"describe-upfront": True})
    assert results["modalities"] == eager["modalities"]


def test_a_resumed_run_restores_the_private_state_on_first_contact(tmp_path):
    """Stopped after round 1 and resumed by a new server run with new node contexts (the
    private state only in each node's state-dir): round 2's train message is the first
    contact, carries `resumed-after-round=1`, and the run ends as the uninterrupted one."""
    straight, _ = _run(tmp_path, "straight", **{"state-dir": str(tmp_path / "state-a")})
    common = {"state-dir": str(tmp_path / "state-b")}
    _run(tmp_path, "stopped", **common, **{"stop-after-round": 1})
    resumed, grid = _run(tmp_path, "stopped", **common, resume=True)
    assert protocol.DESCRIBE not in grid.delivered and resumed["timing"]["described_on_first_contact"] == 4
    assert [h["round"] for h in resumed["history"]] == [1, 2]
    assert resumed["modalities"] == straight["modalities"]
    strip = ("seconds",)  # round 2 trained the same cohort, in the same order, from the same states
    assert ([{k: v for k, v in h.items() if k not in strip} for h in resumed["history"]]
            == [{k: v for k, v in h.items() if k not in strip} for h in straight["history"]])


@pytest.mark.parametrize("method", ["uml", "unimodal"])
def test_under_partial_participation_the_server_meets_only_whom_it_samples(tmp_path, method):
    """40 institutions, 10 % trained per round, 2 rounds, evaluation and calibration sampled at
    10 % too: no message ever reaches an institution that was not sampled, and the roster holds
    only the institutions met (UML: in their train replies; the unimodal baseline: described
    just before, since their modality picks their backbone)."""
    fractions = {"fraction-train": 0.1, "fraction-evaluate": 0.1, "fraction-calibrate": 0.1}
    results, grid = _run(tmp_path, method, n=40, method=method, **fractions)
    met = {i["name"] for i in results["institutions"]}  # the calibrated ones
    trains = grid.delivered.count(protocol.TRAIN)
    assert 8 <= trains <= 10  # 10 % of 40 per round (at least one of every group known so far)
    describes = grid.delivered.count(protocol.DESCRIBE)
    if method == "uml":
        assert results["timing"]["described_on_first_contact"] >= 4
    else:
        assert "described_on_first_contact" not in results["timing"] and describes >= 4
    assert len(grid.delivered) <= 3 * 10 + 6 + describes  # train, evaluate (2 rounds) and calibrate: a few each
    messaged = {node for node, ctx in grid.contexts.items() if ctx.state.keys()}  # a private state was started
    assert len(messaged) < 20, "most institutions were never contacted"
    assert 2 <= len(met) <= 8 and results["modalities"]


def test_a_resumed_run_keeps_what_it_learned_of_the_institutions(tmp_path):
    """A deployment keeps its node ids across a server restart: the resumed run samples the
    institutions by name from round 2 as the uninterrupted one does (fraction 0.5: the same
    cohorts), and still restores each one's private state on first contact."""
    common = {"state-dir": str(tmp_path / "state"), "fraction-train": 0.5}
    straight, _ = _run(tmp_path, "straight", n=6, **{**common, "state-dir": str(tmp_path / "state-a")})
    _run(tmp_path, "stopped", n=6, **common, **{"stop-after-round": 1})
    import torch

    kept = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["members"]
    assert len(kept) == 6 and all(m["name"] for m in kept)  # round 1's evaluation met everyone
    resumed, grid = _run(tmp_path, "stopped", n=6, **common, resume=True)
    assert [h["round"] for h in resumed["history"]] == [1, 2]
    assert resumed["modalities"] == straight["modalities"]
    strip = ("seconds",)  # round 2 trained the same cohort, in the same order, from the same states
    assert ([{k: v for k, v in h.items() if k not in strip} for h in resumed["history"]]
            == [{k: v for k, v in h.items() if k not in strip} for h in straight["history"]])


@pytest.mark.slow
def test_stage_timers_say_where_a_run_spends_its_time(tmp_path, monkeypatch):
    """With FED_UML_STAGE_TIMES set (the scale benchmark), the server and every institution add
    each stage's seconds per message or round to that file; `summarise` adds them up."""
    from fed_uml.federated import stages

    path = tmp_path / "stages.jsonl"
    monkeypatch.setenv(stages.ENV, str(path))
    _run(tmp_path, "timed")
    summary = stages.summarise(path)
    assert summary["client.train"]["calls"] == 8  # 4 institutions x 2 rounds
    assert summary["client.load_state"]["calls"] >= 8 and summary["server.push"]["calls"] >= 1
    assert summary["client.message.train"]["calls"] == 8
    assert summary["client.train"]["seconds"] < summary["client.message.train"]["seconds"]  # a part of the message
    assert summary["server.checkpoint"]["calls"] == 2
    monkeypatch.delenv(stages.ENV)
    before = path.read_text()
    _run(tmp_path, "untimed")
    assert path.read_text() == before  # unset: nothing is timed or written
