"""Sending instructions to institutions and collecting their replies; what failed is recorded."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flwr.app import ArrayRecord, Message
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid

log = FLOWER_LOGGER


class Messenger:
    def __init__(self, grid: Grid, timeout: float, name_of: Callable[[int], str | None]):
        self.grid, self.timeout, self.name_of = grid, float(timeout), name_of
        self.failures: list[dict] = []

    def send(self, backbones: Mapping[int, ArrayRecord | None], message_type: str, instruction,
             server_round: int = 0) -> dict[int, Message]:
        """Send every node in `backbones` the `instruction` (a protocol record) and its backbone
        (or none); return the replies by node id. A node that does not answer, or answers with
        an error, is recorded in `failures` and left out."""
        messages = [Message(content=instruction.content(arrays), message_type=message_type, dst_node_id=node_id)
                    for node_id, arrays in backbones.items()]
        received = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            # an error reply made by the SuperLink for an unreachable node may carry no content
            # and another source id: match replies to the messages they answer
            received[reply.metadata.reply_to_message_id] = reply
        replies = {}
        for msg in messages:
            node_id = msg.metadata.dst_node_id
            reply = received.get(msg.metadata.message_id)
            if reply is None or reply.has_error() or not reply.has_content():
                reason = ("no reply before the timeout" if reply is None
                          else reply.error.reason if reply.has_error() else "empty reply")
                self.record_failure(node_id, message_type, server_round, reason)
            else:
                replies[node_id] = reply
        return replies

    def record_failure(self, node_id: int, stage: str, server_round: int, reason: str) -> None:
        name = self.name_of(node_id)
        lines = [ln.strip() for ln in str(reason).splitlines() if ln.strip()]
        entry = {"node_id": node_id, "institution": name, "stage": stage, "round": server_round,
                 "error": lines[-1] if lines else "", "reason": str(reason)[-4000:]}
        self.failures.append(entry)
        log.warning("institution %s (node %d) failed at %s round %s: %s", name, node_id, stage, server_round,
                    entry["error"])

    def has_failed(self, node_id: int, stage: str) -> bool:
        return any(f["node_id"] == node_id and f["stage"] == stage for f in self.failures)
