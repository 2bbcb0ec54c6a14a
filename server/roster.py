"""The institutions the server knows.

Who connected, who described itself, and which of them average their backbones together.

An institution tells the server once, in its `Description`, its name and modality; from then
on the server knows it by node id (`Member`) and never rebuilds its name.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

from flwr.app import Message
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid

from fed_uml.federated.protocol import Description
from server import FederationError

log = FLOWER_LOGGER
T = TypeVar("T")


@dataclass(frozen=True)
class Member:
    """What the server knows of one institution."""

    node_id: int
    modality: str
    name: str
    n_train: int
    n_test: int

    def as_dict(self) -> dict:
        """The member as a dictionary for results.json and the checkpoint."""
        return asdict(self)


def wait_for_nodes(grid: Grid, min_institutions: int, timeout: float) -> list[int]:
    """The connected node ids once `min_institutions` are there (or FederationError at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_institutions or time.monotonic() > deadline:
            break
        log.info("waiting for institutions: %d connected, %d needed", len(nodes), min_institutions)
        time.sleep(2)
    if len(nodes) < min_institutions:
        raise FederationError(f"only {len(nodes)} institution(s) connected; federated.min_institutions="
                              f"{min_institutions}")
    return nodes


class Roster:
    """The institutions the server knows: their modalities and names by node id."""

    def __init__(self, modalities: Sequence[str], num_classes: int, method: str):
        self.modalities, self.num_classes, self.method = list(modalities), int(num_classes), method
        self.members: dict[int, Member] = {}

    def admit(self, replies: Mapping[int, Message]) -> None:
        """Take in the describe replies; settings that disagree with the server's are an error."""
        for node_id, reply in sorted(replies.items()):
            d = Description.from_content(reply.content)
            if d.modality not in self.modalities:
                raise FederationError(f"institution {d.institution} holds modality {d.modality!r}, which is not "
                                      f"among dataset.modalities={self.modalities}")
            if d.num_classes != self.num_classes:
                raise FederationError(f"institution {d.institution} has {d.num_classes} classes but "
                                      f"dataset.num_classes={self.num_classes}")
            self.members[node_id] = Member(node_id, d.modality, d.institution, d.n_train, d.n_test)
        seen: dict[str, int] = {}
        for m in self.members.values():
            if seen.setdefault(m.name, m.node_id) != m.node_id:
                raise FederationError(f"two nodes claim the same institution {m.name!r}: check their node configs")
        if len(replies) <= 20:
            log.info("institutions: %s", ", ".join(f"{self.members[n].name} ({self.members[n].n_train} train)"
                                                   for n in sorted(replies) if n in self.members))
        else:
            log.info("%d institutions described themselves (%d known)", len(replies), len(self.members))

    def missing_modalities(self) -> list[str]:
        """Modalities no described institution holds."""
        held = {m.modality for m in self.members.values()}
        return [m for m in self.modalities if m not in held]

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.members

    def name(self, node_id: int) -> str | None:
        """The institution's name, or None for an unknown node."""
        member = self.members.get(node_id)
        return member.name if member else None

    def modality(self, node_id: int) -> str:
        """The institution's modality."""
        return self.members[node_id].modality

    def unknown(self, connected: set[int]) -> list[int]:
        """Connected nodes that have not described themselves yet, in node-id order."""
        return sorted(n for n in connected if n not in self.members)

    def group_of(self, node_id: int) -> str:
        """The averaging group of a described institution (see `groups`)."""
        return "uml" if self.method == "uml" else self.members[node_id].modality

    def to_records(self) -> list[dict]:
        """The descriptions learned so far, as plain data (the round checkpoint keeps them)."""
        return [m.as_dict() for m in self.members.values()]

    def restore(self, records: Sequence[Mapping], connected: set[int]) -> None:
        """Descriptions of an earlier run of this federation, for the nodes still connected.

        A deployment keeps its node ids across a server restart; a new simulation does not.
        """
        for r in records:
            if int(r["node_id"]) in connected:
                m = Member(int(r["node_id"]), str(r["modality"]), str(r["name"]), int(r["n_train"]), int(r["n_test"]))
                self.members[m.node_id] = m

    def by_name(self, replies: Mapping[int, T]) -> list[tuple[int, T]]:
        """(node id, reply) ordered by institution name.

        Why: every mean over institutions then sums in one order whatever node ids the runtime drew
        (the simulation draws them at random), so a seed gives the same results.json bit for bit,
        run after run and on either engine (localrun/inprocess.py).
        """
        return sorted(replies.items(), key=lambda item: self.members[item[0]].name)

    def groups(self, connected: set[int] | None = None) -> dict[str, list[int]]:
        """Which institutions average their backbones together (only `connected` ones, if given).

        One group for UML, one per modality for the federated unimodal baseline.
        """
        # Ordered by institution name, not node id (node ids change between runs), so that
        # client sampling is reproducible and a resumed run samples as the original would.
        ordered = sorted(self.members, key=lambda n: self.members[n].name)
        if connected is not None:
            ordered = [n for n in ordered if n in connected]
        if self.method == "uml":
            return {"uml": ordered}
        by_modality = defaultdict(list)
        for node_id in ordered:
            by_modality[self.members[node_id].modality].append(node_id)
        return dict(by_modality)
