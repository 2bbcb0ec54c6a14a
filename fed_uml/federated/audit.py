"""What an institution sends, written down: a Flower mod that logs every outgoing message.

Data owners need to see what leaves their site. With the run-config key `audit-log` set to
a path, every reply of every institution is described in one JSON line: each record's
type, and for arrays their names, shapes, dtypes and sizes, for metrics and configs their
keys and values. The privacy tests read this log.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord


def describe_message(message: Message) -> dict[str, Any]:
    """What a message carries (record names, types, keys and sizes), for the audit log."""
    records = {}
    if message.has_content():
        for name, record in message.content.items():
            if isinstance(record, ArrayRecord):
                records[name] = {
                    "type": "array",
                    "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype, "bytes": len(a.data)}
                               for k, a in record.items()},
                }
            elif isinstance(record, MetricRecord):
                records[name] = {"type": "metric", "values": dict(record)}
            elif isinstance(record, ConfigRecord):
                records[name] = {"type": "config", "values": {k: v if not isinstance(v, bytes) else f"<{len(v)} bytes>"
                                                              for k, v in record.items()}}
            else:
                records[name] = {"type": type(record).__name__}
    return {
        "time": time.time(),
        "message_type": message.metadata.message_type,
        "src_node_id": message.metadata.src_node_id,
        "has_error": message.has_error(),
        "records": records,
    }


def audit_mod(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower client mod: pass the message on, then log the reply if `audit-log` is set."""
    reply = call_next(message, context)
    path = str(context.run_config.get("audit-log") or "")
    if path:
        entry = describe_message(reply)
        entry["node_id"] = context.node_id
        line = json.dumps(entry, default=str) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return reply
