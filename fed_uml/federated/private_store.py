"""An institution's private state on its own disk, per round, so that a stopped run can resume.

Only the institution reads or writes these files (node-local `state_dir`); nothing here is
ever sent. Files are written atomically.

What a resumption needs: the institution's private state after the round k the server's
checkpoint holds. With `fraction-train` < 1 an institution does not train every round, so its
state after round k is the one it saved in the last round <= k it trained in (`latest`); an
institution that has not trained yet has its initial state, saved as round 0 when a run
starts (`start`), so that a store without any round <= k means lost files, never "not
trained yet".

What is kept: saving round k removes the files of rounds after k (stale: an abandoned
attempt or an earlier run) and, of the rounds before k, all but the newest. That is enough:
the server checkpoints a round only after the replies of that round, so it can resume after
round k (the newest <= k is k itself) or, if it stopped during round k, after an earlier
round j, whose newest <= j is the file kept before k (`resume(j)` then drops round k).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

_ROUND = re.compile(r"round-(\d+)\.pt$")


class PrivateStateStore:
    """One institution's private state per round, on its node-local state-dir."""

    def __init__(self, state_dir: str | Path, institution: str):
        self.dir = Path(state_dir).expanduser() / institution

    def path(self, server_round: int) -> Path:
        """The file of round `server_round`."""
        return self.dir / f"round-{server_round}.pt"

    def rounds(self) -> list[int]:
        """The rounds stored, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _ROUND.search(p.name)))

    def _write(self, server_round: int, state: Mapping[str, torch.Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(server_round).with_suffix(".tmp")
        torch.save(dict(state), tmp)
        os.replace(tmp, self.path(server_round))

    def start(self, initial: Mapping[str, torch.Tensor]) -> None:
        """A new run: the rounds of any earlier run go, the initial state is round 0."""
        for old in self.rounds():
            self.path(old).unlink(missing_ok=True)
        self._write(0, initial)

    def save(self, server_round: int, state: Mapping[str, torch.Tensor]) -> None:
        """The state after `server_round`; keeps it and the newest round before it, nothing after it."""
        self._write(server_round, state)
        before = [r for r in self.rounds() if r < server_round]
        keep = {server_round, *before[-1:]}
        for r in self.rounds():
            if r not in keep:
                self.path(r).unlink(missing_ok=True)

    def latest(self, at_most: int) -> tuple[int, dict[str, torch.Tensor]]:
        """(j, state after round j) for the newest saved round j <= `at_most`."""
        rounds = [r for r in self.rounds() if r <= at_most]
        if not rounds:
            raise FileNotFoundError(
                f"cannot resume: {self.dir} holds no private state of round {at_most} or before "
                f"(rounds there: {self.rounds() or 'none'})"
            )
        return rounds[-1], torch.load(self.path(rounds[-1]), weights_only=True)

    def resume(self, after_round: int) -> tuple[int, dict[str, torch.Tensor]]:
        """A resumption after `after_round`.

        Drops the rounds after it (an abandoned attempt) and returns `latest(after_round)`.
        """
        found = self.latest(after_round)
        for r in self.rounds():
            if r > after_round:
                self.path(r).unlink(missing_ok=True)
        return found
