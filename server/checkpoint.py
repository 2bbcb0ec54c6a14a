"""The server's round checkpoint: written atomically after every round, read to resume.

It holds the global backbone of every averaging group, the history so far, the recorded
failures, the state of the client sampler, the institutions' descriptions learned so far and a
digest of the settings, so that a run
resumes only with the settings it was started with (`RESUME_FREE` may change in between).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.common.logger import FLOWER_LOGGER

from fed_uml.files import FileFormatError, load_plain, save_atomic, settings_digest
from server import FederationError

log = FLOWER_LOGGER

FORMAT = "fed-uml/round-checkpoint"
FORMAT_VERSION = 2  # 1: the unversioned, pickled checkpoints of earlier versions (never read back)

# Settings that may change between a stopped run and its resumption.
RESUME_FREE = ("results_dir", "resume", "overwrite", "num_threads", "federated.round_timeout",
               "federated.max_in_flight", "federated.describe_upfront", "federated.delivery_index",
               "federated.audit_log", "federated.stop_after_round", "federated.state_dir")


def config_digest(cfg: Mapping) -> str:
    """SHA-256 of the settings, less those in `RESUME_FREE`."""
    return settings_digest(cfg, RESUME_FREE)


@dataclass
class Checkpoint:
    """What the server saves after a round to resume from it."""

    round: int  # the last round done
    arrays: dict[str, dict[str, torch.Tensor]]  # group -> global backbone after that round
    history: list[dict]
    failures: list[dict]
    rng: object  # random.Random.getstate() of the client sampler: a tuple of ints
    members: list[dict] = field(default_factory=list)  # what the server learned of the institutions


def save_checkpoint(path: Path, checkpoint: Checkpoint, cfg: Mapping) -> None:
    """Tensors and plain data only, so that `load_checkpoint` reads it with `weights_only=True`."""
    save_atomic({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config_digest": config_digest(cfg),
        "round": int(checkpoint.round),
        "arrays": {g: {k: v.detach().cpu().clone() for k, v in a.items()} for g, a in checkpoint.arrays.items()},
        "history": checkpoint.history,
        "failures": checkpoint.failures,
        "rng": checkpoint.rng,
        "members": [dict(m) for m in checkpoint.members],
    }, path)


def load_checkpoint(path: Path, cfg: Mapping, resume: bool) -> Checkpoint | None:
    """The checkpoint to resume from: None unless `resume` (and a warning if there is none).

    Read with `weights_only=True` (a file holding anything but tensors and plain data is refused
    before any of it is built); its settings digest is compared before anything else in it is used.
    """
    path = Path(path)
    if not resume:
        return None
    if not path.exists():
        log.warning("resume requested but %s does not exist: starting at round 1", path)
        return None
    how = ("it cannot be resumed: start the run again with resume=false and another results-dir "
           "(its results.json and backbone.pt, if written, stay usable)")
    try:
        state = load_plain(path, FORMAT, FORMAT_VERSION, "round checkpoint", how)
    except FileFormatError as e:
        raise FederationError(str(e)) from None
    if state.get("config_digest") != config_digest(cfg):
        raise FederationError(f"{path} was written with other settings; resume only with the same config "
                              "(or use another results-dir)")
    missing = [k for k in ("round", "arrays", "history", "failures", "rng") if k not in state]
    if missing:
        raise FederationError(f"{path}: incomplete round checkpoint (missing {missing}); {how}")
    log.info("resuming after round %d from %s", state["round"], path)
    return Checkpoint(int(state["round"]), state["arrays"], state["history"], state["failures"], state["rng"],
                      list(state.get("members") or []))
