"""The delivery index (`server/delivery_index.py`) hands every node the same messages, in the
same order, as Flower 1.42.0's own `InMemoryLinkState.get_message_ins`, and is refused for any
other Flower version."""

from __future__ import annotations

import random
import time
import uuid

import pytest
from flwr.app import ConfigRecord, Message, Metadata, RecordDict
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState, RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.superlink.federation import NoOpFederationManager

import server.delivery_index as delivery_index


def _state(nodes: int):
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    ids = list(_register_nodes(nodes, factory))
    run = Run.create_empty(1)
    run.federation_id = NOOP_FEDERATION_ID
    state.run_ids[1] = RunRecord(run=run)
    return state, ids


def _add(state, msg_id: str, dst: int, expired: bool = False) -> None:
    created = time.time() - (7200 if expired else 0)
    md = Metadata(run_id=1, message_id=msg_id, src_node_id=1, dst_node_id=dst, reply_to_message_id="",
                  group_id="", created_at=created, ttl=3600.0, message_type="train")
    state.message_ins_store[msg_id] = Message(content=RecordDict({"c": ConfigRecord({"a": 1})}), metadata=md)
    index = state.__dict__.get(delivery_index._PATCHED)
    if index is not None:  # what the patched store_message_ins adds after Flower's checks
        index.setdefault(dst, {})[msg_id] = None


def _deliveries(get, seed: int = 0) -> list:
    """Three delivery sweeps as the simulation engine makes them (every node, limit 1), with
    messages stored before and between the sweeps, several for some nodes, some expired."""
    rng = random.Random(seed)
    state, ids = _state(60)
    out, n = [], 0

    def store(k):
        nonlocal n
        for _ in range(k):
            n += 1
            _add(state, str(uuid.UUID(int=rng.getrandbits(128))), rng.choice(ids[:25]), expired=rng.random() < 0.1)

    store(80)
    for sweep in range(3):
        for node in ids:
            got = get(state, node, 1) if sweep != 1 else get(state, node, None)  # limit=None: all of them
            out.append((ids.index(node), [m.metadata.message_id for m in got]))
        store(30)
    for node in ids:  # a last sweep, every node asking for everything it has
        out.append((ids.index(node), [m.metadata.message_id for m in get(state, node, None)]))
    # What is left stored: the delivered messages, the expired ones deleted. (Within a sweep
    # Flower drops an expired message when any node's call walks past it, the index when its own
    # node asks; after a sweep in which every node asked, the same ones are gone.)
    out.append(sorted(state.message_ins_store))
    return out


def test_every_node_gets_the_same_messages_in_the_same_order_as_without_the_index():
    originals = getattr(InMemoryLinkState, "_fed_uml_original", None)
    flower_get = originals[1] if originals else InMemoryLinkState.get_message_ins
    expected = _deliveries(lambda s, node, limit: flower_get(s, node_id=node, limit=limit))
    assert delivery_index.patch_in_memory_link_state()
    assert InMemoryLinkState.get_message_ins is not flower_get
    got = _deliveries(lambda s, node, limit: s.get_message_ins(node_id=node, limit=limit))
    assert got == expected
    assert sum(len(ids) for _, ids in expected[:-1]) > 80, "the sweeps must deliver many messages"


def test_another_flower_version_is_left_alone(monkeypatch):
    monkeypatch.setattr(delivery_index, "flower_version", lambda: "1.43.0")
    before = InMemoryLinkState.get_message_ins
    assert delivery_index.patch_in_memory_link_state() is False
    assert InMemoryLinkState.get_message_ins is before


@pytest.mark.slow
def test_same_seed_same_metrics_with_and_without_the_index(flower_runtime, tmp_path):
    import json

    flower_runtime.start_superlink(simulation=True)
    results = {}
    for on in (False, True):
        out = tmp_path / f"index-{on}"
        flower_runtime.run({"num-server-rounds": 3, "delivery-index": on, "evaluate-every": 1, "fraction-train": 0.75,
                            "describe-upfront": True,  # cohorts by name: the same in both runs
                            "results-dir": str(out), "overrides": "dataset.samples_per_class=6 "
                            "dataset.test_samples_per_class=3 dataset.image_size=16 model.width=4"},
                           {"num-supernodes": 4, "client-resources-num-cpus": 1}, timeout=600)
        results[on] = json.loads((out / "results.json").read_text())
    assert results[False]["modalities"] == results[True]["modalities"]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in results[False]["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in results[True]["history"]]
