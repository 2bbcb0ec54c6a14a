"""Checkpoints of a centralized run's training, so that a killed run resumes where it stopped.

Why the loop checkpoints itself rather than each method: every method trains through
`train_unpaired` (UML, the unimodal baseline one modality after another, pooled, the
compared methods with their alignment modules), so one mechanism there covers them all.
A run opens `checkpointing(...)` around its method; each call of `train_unpaired` inside it
is one *phase* (numbered in call order, named by its `desc`). Every `every` epochs, and at a
phase's last epoch, the phase's whole state goes into one file, atomically: the model, the
alignment module (its weights and step count), the optimiser, the batch order of every
modality, the data-order generator and the global RNGs of torch, NumPy and Python, the
epochs done and the history. Resuming restores exactly that state, so a run killed at epoch
k and resumed gives the uninterrupted run bit for bit (same seed, same thread count). A
finished phase is restored, not retrained: the next one starts from the very same RNG state.
The file holds tensors and plain data only and is read with `weights_only=True`
(`fed_uml.files`), after its settings digest is compared.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from fed_uml.files import FileFormatError, load_plain, save_atomic

log = logging.getLogger(__name__)

FORMAT = "fed-uml/training-checkpoint"
FORMAT_VERSION = 1
HOW_TO_PROCEED = ("it cannot be resumed: run again with resume=false and another results_dir, or with "
                  "overwrite=true to replace what that results_dir holds")


@dataclass
class TrainingCheckpoints:
    """The checkpoint file of one run: its phases' saved states, and where the next call stands."""

    path: Path
    every: int
    digest: str
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0

    def next_phase(self, desc: str) -> str:
        """A unique key of the next phase of the job, from its description."""
        self.calls += 1
        return f"{self.calls}:{desc}"

    def save(self, phase: str, state: dict[str, Any]) -> None:
        """Save `state` as phase `phase`, atomically."""
        self.phases[phase] = state
        save_atomic({"format": FORMAT, "format_version": FORMAT_VERSION, "settings_digest": self.digest,
                     "phases": self.phases}, self.path)

    @classmethod
    def open(cls, path: str | Path, every: int, digest: str, resume: bool) -> TrainingCheckpoints:
        """A checkpoint at `path`: read back when `resume` (its digest must be `digest`), else a new one."""
        path = Path(path)
        ckpt = cls(path, int(every), digest)
        if not resume or not path.exists():
            if resume:
                log.warning("resume=true but %s does not exist: training starts at epoch 1", path)
            return ckpt
        state = load_plain(path, FORMAT, FORMAT_VERSION, "training checkpoint", HOW_TO_PROCEED)
        if state.get("settings_digest") != digest:
            raise FileFormatError(path, "written with other settings; resume only with the settings it was started "
                                        f"with, or {HOW_TO_PROCEED.split(': ', 1)[1]}")
        ckpt.phases = dict(state.get("phases") or {})
        done = ", ".join(f"{k.split(':', 1)[1]} {v['epochs_done']}/{v['epochs']} epochs"
                         for k, v in ckpt.phases.items())
        log.info("resuming from %s (%s)", path, done or "nothing trained yet")
        return ckpt


_ACTIVE: contextvars.ContextVar[TrainingCheckpoints | None] = contextvars.ContextVar("training_checkpoints",
                                                                                    default=None)


@contextmanager
def checkpointing(ckpt: TrainingCheckpoints | None) -> Iterator[TrainingCheckpoints | None]:
    """Every `train_unpaired` inside this block checkpoints into `ckpt` (None: not at all)."""
    token = _ACTIVE.set(ckpt if ckpt is not None and ckpt.every > 0 else None)
    try:
        yield ckpt
    finally:
        _ACTIVE.reset(token)


def active() -> TrainingCheckpoints | None:
    """The training checkpoints of the running job, or None when it keeps none."""
    return _ACTIVE.get()


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state training draws from, as tensors and plain data."""
    # the legacy tuple (get_state's default form; the stubs also allow the dict form)
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def restore_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    """Restore every random generator the training draws from as `state` recorded them."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_as_tuples(state["python"]))


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples all the way down."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
