"""Sending instructions to institutions and collecting their replies; what failed is recorded.

Messages go out through a window of at most `max_in_flight` unanswered messages, topped up as
replies arrive, rather than all at once. Why: Flower's simulation engine (1.42) delivers
messages by polling every registered node in turn, and each poll scans every stored message
(`vce_api.add_messages_to_queue` -> `InMemoryLinkState.get_message_ins`, which runs
`_check_stored_messages` per stored message): one delivery pass costs registered nodes x
messages in flight. With 1,000 institutions and all 1,000 messages of a round in flight, one
pass takes seconds and the engine's thread holds the interpreter lock for most of the round;
with a window of 32 the same pass takes a fraction of that and the Ray actors stay busy. In a
deployment the SuperNodes pull their own messages and every institution trains in parallel on
its own machine, so there the default window is unbounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from flwr.app import ArrayRecord, Message
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid

from fed_uml.federated import stages

log = FLOWER_LOGGER

SIMULATION_WINDOW = 32  # messages in flight in a simulation when `max_in_flight` is 0 (auto)
_FIRST_POLL, _LONGEST_POLL = 0.01, 0.1  # seconds between pulls: short after a reply, backing off to 0.1
PROGRESS_EVERY = 30.0  # seconds between progress lines of a phase that takes longer


def is_simulation(grid: Grid) -> bool:
    """Whether the grid is the simulation engine's in-process one (not a SuperLink's)."""
    return type(grid).__name__ == "InMemoryGrid"


def window_for(grid: Grid, max_in_flight: int) -> int | None:
    """Messages in flight at most.

    `max_in_flight` if > 0; else (auto) `SIMULATION_WINDOW` in a simulation and unbounded (None) in
    a deployment.
    """
    if max_in_flight < 0:
        raise ValueError(f"federated.max_in_flight={max_in_flight} must be >= 0 (0: automatic)")
    if max_in_flight > 0:
        return max_in_flight
    return SIMULATION_WINDOW if is_simulation(grid) else None


class Messenger:
    """Sends instructions with backbones to nodes, collects replies and records failures."""

    def __init__(self, grid: Grid, timeout: float, name_of: Callable[[int], str | None], max_in_flight: int = 0):
        self.grid, self.timeout, self.name_of = grid, float(timeout), name_of
        self.window = window_for(grid, int(max_in_flight))
        self.failures: list[dict] = []

    def send(self, backbones: Mapping[int, ArrayRecord | None], message_type: str, instruction,
             server_round: int = 0) -> dict[int, Message]:
        """Send every node in `backbones` the `instruction` and its backbone; return the replies by node id.

        The instruction is a protocol record, or a function node id -> record; the backbone may be
        none. A node that does not answer within the timeout (counted from when its message went
        out), or answers with an error, is recorded in `failures` and left out.
        """
        record_for = instruction if callable(instruction) else (lambda _node: instruction)
        with stages.stage("server.build"):
            pending = [(node_id, Message(content=record_for(node_id).content(arrays), message_type=message_type,
                                         dst_node_id=node_id)) for node_id, arrays in backbones.items()]
        pending.reverse()  # popped from the end: sent in the order given
        in_flight: dict[str, tuple[int, float]] = {}  # message id -> (node id, deadline)
        replies: dict[int, Message] = {}
        poll = _FIRST_POLL
        total, next_note = len(pending), time.monotonic() + PROGRESS_EVERY
        while pending or in_flight:
            if time.monotonic() >= next_note:  # a long phase says how far it is
                log.info("%s: %d of %d institutions answered, %d waiting", message_type,
                         total - len(pending) - len(in_flight), total, len(in_flight) + len(pending))
                next_note = time.monotonic() + PROGRESS_EVERY
            room = len(pending) if self.window is None else self.window - len(in_flight)
            if room > 0 and pending:
                batch = [pending.pop() for _ in range(min(room, len(pending)))]
                with stages.stage("server.push"):
                    stored = set(self.grid.push_messages([m for _, m in batch])) - {None}
                deadline = time.monotonic() + self.timeout
                for node_id, msg in batch:  # pushing gave each message its id
                    if msg.metadata.message_id in stored:
                        in_flight[msg.metadata.message_id] = (node_id, deadline)
                    else:
                        self.record_failure(node_id, message_type, server_round, "the SuperLink refused the message")
            with stages.stage("server.pull"):
                got = list(self.grid.pull_messages(list(in_flight))) if in_flight else []
            for reply in got:
                # an error reply made by the SuperLink for an unreachable node may carry no
                # content and another source id: match replies to the messages they answer
                entry = in_flight.pop(reply.metadata.reply_to_message_id, None)
                if entry is None:
                    continue
                node_id = entry[0]
                if reply.has_error() or not reply.has_content():
                    self.record_failure(node_id, message_type, server_round,
                                        reply.error.reason if reply.has_error() else "empty reply")
                else:
                    replies[node_id] = reply
            now = time.monotonic()
            for msg_id in [i for i, (_, deadline) in in_flight.items() if deadline <= now]:
                node_id, _ = in_flight.pop(msg_id)
                self.record_failure(node_id, message_type, server_round, "no reply before the timeout")
            if got:
                poll = _FIRST_POLL
            elif in_flight:
                with stages.stage("server.wait"):
                    time.sleep(poll)
                poll = min(_LONGEST_POLL, poll * 1.5)
        return {n: replies[n] for n in backbones if n in replies}

    def record_failure(self, node_id: int, stage: str, server_round: int, reason: str) -> None:
        """Record (and log) that `node_id` failed at `stage` of `server_round`."""
        name = self.name_of(node_id)
        lines = [ln.strip() for ln in str(reason).splitlines() if ln.strip()]
        entry = {"node_id": node_id, "institution": name, "stage": stage, "round": server_round,
                 "error": lines[-1] if lines else "", "reason": str(reason)[-4000:]}
        self.failures.append(entry)
        log.warning("institution %s (node %d) failed at %s round %s: %s", name, node_id, stage, server_round,
                    entry["error"])

    def has_failed(self, node_id: int, stage: str) -> bool:
        """Whether `node_id` has failed at `stage`."""
        return any(f["node_id"] == node_id and f["stage"] == stage for f in self.failures)
