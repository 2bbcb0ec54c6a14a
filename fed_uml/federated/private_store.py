"""An institution's private state on its own disk, per round, so that a stopped run can resume.

Only the institution reads or writes these files (node-local `state_dir`); nothing here
is ever sent. Files are written atomically and the two newest rounds are kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

_ROUND = re.compile(r"round-(\d+)\.pt$")


class PrivateStateStore:
    def __init__(self, state_dir: str | Path, institution: str):
        self.dir = Path(state_dir).expanduser() / institution

    def path(self, server_round: int) -> Path:
        return self.dir / f"round-{server_round}.pt"

    def save(self, server_round: int, state: Mapping[str, torch.Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(server_round).with_suffix(".tmp")
        torch.save(dict(state), tmp)
        os.replace(tmp, self.path(server_round))
        for old in self.rounds()[:-2]:
            self.path(old).unlink(missing_ok=True)

    def rounds(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _ROUND.search(p.name)))

    def load(self, server_round: int) -> dict[str, torch.Tensor]:
        path = self.path(server_round)
        if not path.exists():
            raise FileNotFoundError(
                f"cannot resume: {path} (this institution's private state after round {server_round}) is missing"
            )
        return torch.load(path, weights_only=True)
