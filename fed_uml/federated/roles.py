"""The role a Flower node plays.

Which institution it is, holding which modality and which share of that modality's data.

Simulation: a node knows only its `partition-id` among `num-partitions`; the modality
follows from the run config (round-robin over the modalities, or explicit counts such as
"sar:3,rgb:1", institutions numbered modality by modality). Deployment: each SuperNode is
started with `--node-config "modality='sar' partition-id=0 num-partitions=2"` (partition
among that modality's institutions) and optionally `data-root='/path'`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Node-config keys (a SuperNode's `--node-config`; in simulation only the first two exist).
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
MODALITY = "modality"
DATA_ROOT = "data-root"
STATE_DIR = "state-dir"  # node-local private state and model file (read by the ClientApp)
MODEL_DIR = "model-dir"  # node-local folder of the model file (read by the ClientApp)


@dataclass(frozen=True)
class InstitutionId:
    """Which institution a node is: its modality and its share of that modality's data."""

    modality: str
    index: int  # which share of the modality's data, 0 <= index < count
    count: int  # institutions holding this modality
    data_root: str | None = None

    @property
    def name(self) -> str:
        """The institution's name, the one place it is made; it tells the server (`Description`)."""
        return f"{self.modality}-{self.index}"


def parse_counts(spec: object, modalities: Sequence[str]) -> dict[str, int] | None:
    """`0`/`""` -> None (round-robin); an int n -> n per modality; "sar:3,rgb:1" -> a map."""
    if spec in (0, "0", "", None):
        return None
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdecimal()):
        n = int(spec)
        if n < 1:
            raise ValueError(f"federated.institutions_per_modality must be >= 0, got {spec}")
        return {m: n for m in modalities}
    if isinstance(spec, Mapping):
        try:
            counts = {str(k): int(v) for k, v in spec.items()}
        except (TypeError, ValueError):
            raise ValueError(f"federated.institutions_per_modality={spec!r}: counts must be integers") from None
    else:
        counts = {}
        for part in str(spec).split(","):
            name, sep, count = part.partition(":")
            if not sep or not count.strip().isdecimal():
                raise ValueError(
                    f"federated.institutions_per_modality={spec!r}: expected 'modality:count,...' such as 'sar:3,rgb:1'"
                )
            counts[name.strip()] = int(count)
    unknown = sorted(set(counts) - set(modalities))
    missing = [m for m in modalities if counts.get(m, 0) < 1]
    if unknown or missing:
        raise ValueError(
            f"federated.institutions_per_modality={spec!r} does not match dataset.modalities={list(modalities)} "
            f"(unknown {unknown}, without institutions {missing})"
        )
    return {m: counts[m] for m in modalities}


def institution_layout(num_nodes: int, modalities: Sequence[str], spec: object) -> list[InstitutionId]:
    """The institution of every partition-id 0..num_nodes-1 in a simulation."""
    if num_nodes < 1:
        raise ValueError("a federation needs at least one node")
    counts = parse_counts(spec, modalities)
    if counts is None:
        k = len(modalities)
        if num_nodes < k:
            raise ValueError(
                f"{num_nodes} node(s) cannot hold {k} modalities {list(modalities)}: start the simulation with "
                f'--federation-config "num-supernodes={k}" or more'
            )
        return [
            InstitutionId(modalities[p % k], p // k, len(range(p % k, num_nodes, k))) for p in range(num_nodes)
        ]
    total = sum(counts.values())
    if total != num_nodes:
        raise ValueError(
            f"federated.institutions_per_modality asks for {total} institutions ({counts}) but the federation has "
            f"{num_nodes} nodes: pass --federation-config \"num-supernodes={total}\""
        )
    return [InstitutionId(m, i, n) for m, n in counts.items() for i in range(n)]


def _node_int(node_config: Mapping[str, Any], key: str) -> int:
    value = node_config[key]
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdecimal())):
        raise ValueError(f"node config {key}={value!r} must be an integer")
    return int(value)


def institution_for_node(node_config: Mapping[str, Any], modalities: Sequence[str], spec: object) -> InstitutionId:
    """The institution a node plays, from its node config (deployment) or partition id (simulation)."""
    try:
        pid, nparts = (_node_int(node_config, k) for k in (PARTITION_ID, NUM_PARTITIONS))
    except KeyError as err:
        raise ValueError(f"node config lacks {err.args[0]!r}: start SuperNodes with --node-config "
                         "\"modality='sar' partition-id=0 num-partitions=1\"") from None
    if not 0 <= pid < nparts:
        raise ValueError(f"node config: partition-id={pid} must lie in [0, num-partitions={nparts})")
    root = node_config.get(DATA_ROOT) or None
    if MODALITY in node_config:
        modality = str(node_config[MODALITY])
        if modality not in modalities:
            raise ValueError(f"node config modality={modality!r} is not among dataset.modalities={list(modalities)}")
        return InstitutionId(modality, pid, nparts, root)
    inst = institution_layout(nparts, modalities, spec)[pid]
    return InstitutionId(inst.modality, inst.index, inst.count, root)
