"""The cost inside Flower that sets how many messages a simulation should keep in flight.

    python -m experiments.bench.flower_delivery [--nodes 1000,10000] [--in-flight 32,100,1000]

Flower 1.42's simulation engine hands messages to the Ray actors from one thread that, every
0.1 s, asks the in-memory link state for the next message of every registered node
(`vce_api.add_messages_to_queue` -> `InMemoryLinkState.get_message_ins(node_id, limit=1)`);
each call walks every stored message through `_check_stored_messages`. This times one such
sweep with Flower's own classes, N registered nodes and M messages stored (in flight), no
ClientApp and no Ray: the cost is N x M, and it is what `federated.max_in_flight` bounds
(`server/messaging.py`). No project code is involved.
"""

from __future__ import annotations

import argparse
import time
import uuid

from flwr.app import ConfigRecord, Message, Metadata, RecordDict
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.superlink.federation import NoOpFederationManager

from experiments.bench.common import save, table
from experiments.cli import run_main


def sweep_seconds(nodes: int, in_flight: int, repeats: int = 3) -> tuple[float, int]:
    """Seconds of one delivery sweep (every node asks for its next message), and messages delivered.

    The sweep runs with `in_flight` messages stored for the first `in_flight` nodes, the fastest of
    `repeats` sweeps; and how many messages the first sweep delivered (all of them, one per node).
    """
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    mapping = _register_nodes(nodes, factory)
    run = Run.create_empty(1)
    run.federation_id = NOOP_FEDERATION_ID
    state.run_ids[1] = RunRecord(run=run)
    ids = list(mapping)
    for i in range(in_flight):
        md = Metadata(run_id=1, message_id=str(uuid.uuid4()), src_node_id=1, dst_node_id=ids[i % nodes],
                      reply_to_message_id="", group_id="", created_at=time.time(), ttl=3600.0,
                      message_type="train")
        state.message_ins_store[md.message_id] = Message(content=RecordDict({"c": ConfigRecord({"a": 1})}),
                                                         metadata=md)
    best, delivered = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = sum(len(state.get_message_ins(node_id=node_id, limit=1)) for node_id in mapping)
        best = min(best, time.perf_counter() - t0)
        delivered = got if delivered is None else delivered
    return best, int(delivered or 0)


def main() -> None:
    """Run the Flower message-delivery benchmark from the command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="1000,10000")
    ap.add_argument("--in-flight", default="32,100,1000")
    ap.add_argument("--out", default="benchmarks")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.nodes.split(",")):
        for m in (int(x) for x in args.in_flight.split(",")):
            s, _ = sweep_seconds(n, m)
            rows.append({"nodes": n, "in_flight": m, "sweep_s": s, "us_per_node_message": 1e6 * s / (n * m),
                         "max_messages_per_s": m / (s + 0.1)})
            print(f"nodes={n} in_flight={m}: one sweep {s:.3f} s", flush=True)
    print(table(rows, list(rows[0])))
    print(f"wrote {save('flower_delivery', {'rows': rows}, args.out)}")


if __name__ == "__main__":
    run_main(main)
