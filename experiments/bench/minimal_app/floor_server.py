"""R rounds of FedAvg over every connected node, the way Flower's own examples send them.

All messages of a round go at once (`grid.send_and_receive`), timed as fed-uml's server times itself
(`timing.server_start_unix`, `timing.first_round_unix`, `history[].seconds`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run R rounds of the floor app and record the same timings fed-uml's server records."""
    timing = {"server_start_unix": time.time()}
    cfg = context.run_config
    if cfg.get("delivery-index"):  # the one thing of fed-uml's here: measure Flower with and without it
        from server.delivery_index import patch_in_memory_link_state

        timing["delivery_index"] = patch_in_memory_link_state()
    arrays = [np.zeros(int(cfg["parameters"]), dtype=np.float32)]
    nodes = list(grid.get_node_ids())
    while len(nodes) < int(cfg["nodes"]):  # the simulation registers its nodes beside the ServerApp's start
        time.sleep(0.1)
        nodes = list(grid.get_node_ids())
    history = []
    for server_round in range(1, int(cfg["num-server-rounds"]) + 1):
        t0 = time.perf_counter()
        timing.setdefault("first_round_unix", time.time())
        messages = [Message(RecordDict({"arrays": ArrayRecord(arrays)}), dst_node_id=n,
                            message_type=MessageType.TRAIN) for n in nodes]
        replies = [r for r in grid.send_and_receive(messages, timeout=3600) if not r.has_error()]
        total = [np.zeros_like(a) for a in arrays]
        for reply in replies:  # a running sum, as fed-uml's server averages
            for t, a in zip(total, reply.content.array_records["arrays"].to_numpy_ndarrays()):
                t += a
        arrays = [t / max(len(replies), 1) for t in total]
        history.append({"round": server_round, "answered": len(replies), "seconds": time.perf_counter() - t0})
    if cfg.get("results-file"):
        Path(str(cfg["results-file"])).write_text(json.dumps({"timing": timing, "history": history}))
