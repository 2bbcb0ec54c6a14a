"""The server's round checkpoint: written atomically after every round, read to resume.

It holds the global backbone of every averaging group, the history so far, the recorded
failures, the state of the client sampler and a digest of the settings, so that a run
resumes only with the settings it was started with (`RESUME_FREE` may change in between).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.common.logger import FLOWER_LOGGER

from server import FederationError

log = FLOWER_LOGGER

# Settings that may change between a stopped run and its resumption.
RESUME_FREE = ("results_dir", "federated.resume", "federated.round_timeout", "federated.max_in_flight",
               "federated.describe_upfront", "federated.audit_log", "num_threads", "federated.stop_after_round",
               "federated.state_dir")


def config_digest(cfg: Mapping) -> str:
    """SHA-256 of the settings, less those in `RESUME_FREE`."""
    c = json.loads(json.dumps(cfg, default=str))
    for dotted in RESUME_FREE:
        node = c
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()


@dataclass
class Checkpoint:
    round: int  # the last round done
    arrays: dict[str, dict[str, torch.Tensor]]  # group -> global backbone after that round
    history: list[dict]
    failures: list[dict]
    rng: object  # random.Random.getstate() of the client sampler


def save_checkpoint(path: Path, checkpoint: Checkpoint, cfg: Mapping) -> None:
    state = {
        "round": checkpoint.round,
        "arrays": {g: {k: v.clone() for k, v in a.items()} for g, a in checkpoint.arrays.items()},
        "history": checkpoint.history,
        "failures": checkpoint.failures,
        "rng": checkpoint.rng,
        "config_digest": config_digest(cfg),
    }
    tmp = Path(path).with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: Mapping, resume: bool) -> Checkpoint | None:
    """The checkpoint to resume from: None unless `resume` (and a warning if there is none)."""
    path = Path(path)
    if not resume:
        return None
    if not path.exists():
        log.warning("resume requested but %s does not exist: starting at round 1", path)
        return None
    state = torch.load(path, weights_only=False)
    if state["config_digest"] != config_digest(cfg):
        raise FederationError(f"{path} was written with other settings; resume only with the same config "
                              "(or use another results-dir)")
    log.info("resuming after round %d from %s", state["round"], path)
    return Checkpoint(state["round"], state["arrays"], state["history"], state["failures"], state["rng"])
