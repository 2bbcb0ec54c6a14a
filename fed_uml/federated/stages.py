"""Where a federated run's time goes, stage by stage, for the scale benchmark.

Why: a simulation's cost is Flower's (delivery, Ray), the server's (building, serialising and
sending messages, handling replies, averaging) and the institutions' (decoding the backbone,
loading it into the process's model, training, encoding the reply). A sampling profiler sees
them only statistically and not inside every actor; these timers add each stage's wall
seconds per process and append them, one JSON line per message or round, to the file named by
`FED_UML_STAGE_TIMES` (`experiments/bench/scale.py` sets it and sums the lines). Unset (any
normal run), `stage` is a no-op.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "FED_UML_STAGE_TIMES"
_seconds: dict[str, float] = defaultdict(float)
_calls: dict[str, int] = defaultdict(int)


def enabled() -> bool:
    """Whether the stage timers are on (the scale benchmark sets the environment variable)."""
    return bool(os.environ.get(ENV))


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the wall seconds of the block to stage `name` (when the timers are on)."""
    if not enabled():
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _seconds[name] += time.perf_counter() - t0
        _calls[name] += 1


def flush(role: str) -> None:
    """Append what was timed since the last flush as one JSON line (`role`: server or client)."""
    path = os.environ.get(ENV)
    if not path or not _seconds:
        return
    line = json.dumps({"pid": os.getpid(), "role": role, "seconds": dict(_seconds), "calls": dict(_calls)})
    with open(path, "a") as f:  # one short write per line: lines of several processes do not interleave
        f.write(line + "\n")
    _seconds.clear()
    _calls.clear()


def summarise(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """{stage: {"seconds": total over processes, "calls": n, "ms_per_call": ...}} of a timings file."""
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            for k, v in entry["seconds"].items():
                seconds[k] += v
                calls[k] += entry["calls"].get(k, 0)
    return {k: {"seconds": seconds[k], "calls": calls[k], "ms_per_call": 1e3 * seconds[k] / max(calls[k], 1)}
            for k in sorted(seconds)}
