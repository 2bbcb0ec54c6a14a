"""Helpers for tests that drive the Flower runtime."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import Context, Message, Metadata, RecordDict

TINY = ("model.width=8 dataset.samples_per_class=4 dataset.test_samples_per_class=3 dataset.image_size=16"
        " training.batch_size=8")


def message(content: RecordDict, message_type: str, dst_node_id: int = 1) -> Message:
    """A Message as a node receives it (explicit metadata: no runtime needed)."""
    md = Metadata(run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=0, dst_node_id=dst_node_id,
                  reply_to_message_id="", group_id="", created_at=time.time(), ttl=3600.0,
                  message_type=message_type)
    return Message(content=content, metadata=md)


def context(run_config: dict, node_config: dict, state: RecordDict | None = None) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=state or RecordDict(), run_config=run_config)


def read_audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
