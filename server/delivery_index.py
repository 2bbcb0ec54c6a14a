"""An index of undelivered messages by node for Flower 1.42.0's in-memory link state.

Why: Flower's simulation engine hands messages to the Ray actors from one thread that, every
0.1 s, asks the link state for the next message of EVERY registered node
(`vce_api.add_messages_to_queue` -> `InMemoryLinkState.get_message_ins(node_id, limit=1)`),
and each of those calls walks every stored message. One sweep costs nodes x stored messages:
at 10,000 nodes a round of 100 messages is delivered at about 20 messages a second, and that
cost sets Flower's own floor for a simulation of many institutions.

The patch keeps, per destination node, the ids of the messages not yet delivered to it, in the
order they were stored, and `get_message_ins` walks only those: each message is still checked
(`_check_stored_messages`: expired or left the federation) before it is handed out, and handed
out in the same order, marked delivered the same way. What changes is only that a message is
checked when its own node asks, not when any node does: in the simulation every node asks at
every sweep, so an expired message is dropped in the same sweep either way.

It replaces two methods of one class of one exact Flower version (checked: any other version is
refused and nothing is patched), in the process that runs the simulation (the ServerApp shares
it), and only when the run config asks for it (`federated.delivery_index`). A deployment's
SuperLink runs in its own process and is never touched.
"""

from __future__ import annotations

import threading

FLOWER_VERSION = "1.42.0"
_PATCHED = "_fed_uml_delivery_index"
_LOCK = threading.Lock()


def flower_version() -> str:
    """The installed Flower's version."""
    import flwr

    return str(flwr.__version__)


def patch_in_memory_link_state() -> bool:
    """Install the index on `InMemoryLinkState` (idempotent).

    False, and nothing changed, unless the installed Flower is exactly `FLOWER_VERSION`.
    """
    if flower_version() != FLOWER_VERSION:
        return False
    from flwr.server.superlink.linkstate import in_memory_linkstate
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    with _LOCK:
        if getattr(InMemoryLinkState, _PATCHED, False):
            return True
        original_store = InMemoryLinkState.store_message_ins

        def store_message_ins(self, message):
            message_id = original_store(self, message)
            if message_id is not None:
                with self.lock:
                    _index(self).setdefault(message.metadata.dst_node_id, {})[message_id] = None
            return message_id

        def get_message_ins(self, node_id, limit, *, run_id=None):
            """As Flower's, walking only `node_id`'s undelivered messages."""
            if limit is not None and limit < 1:
                raise AssertionError("`limit` must be >= 1")
            found = []
            with self.lock:
                pending = _index(self).get(node_id)
                for msg_id in list(pending or ()):
                    self._check_stored_messages({msg_id})
                    msg = self.message_ins_store.get(msg_id)
                    if msg is None or msg.metadata.delivered_at != "":  # deleted (expired) or delivered
                        pending.pop(msg_id, None)
                        continue
                    if msg.metadata.dst_node_id == node_id and (run_id is None or msg.metadata.run_id == run_id):
                        found.append(msg)
                    if limit and len(found) == limit:
                        break
                for msg in found:
                    pending.pop(msg.metadata.message_id, None)
            delivered_at = in_memory_linkstate.now().isoformat()  # the clock Flower's own method reads
            for msg in found:
                msg.metadata.delivered_at = delivered_at
            return found

        InMemoryLinkState.store_message_ins = store_message_ins
        InMemoryLinkState.get_message_ins = get_message_ins
        InMemoryLinkState._fed_uml_original = (original_store, InMemoryLinkState.__dict__.get("get_message_ins"))
        setattr(InMemoryLinkState, _PATCHED, True)
        return True


def _index(state) -> dict[int, dict[str, None]]:
    """The state's index, built on first use from the messages it already holds (undelivered only)."""
    index = state.__dict__.get(_PATCHED)
    if index is None:
        index = {}
        for msg_id, msg in state.message_ins_store.items():
            if msg.metadata.delivered_at == "":
                index.setdefault(msg.metadata.dst_node_id, {})[msg_id] = None
        state.__dict__[_PATCHED] = index
    return index
