"""One writer per store.

An advisory file lock beside it, so that two runs (or two simulated institutions) that need the same
store at once do not both write it: the second waits, then finds it complete.

Why `fcntl.flock`: the kernel releases it when its holder dies (a killed prepare leaves no stale
lock to clean up), and it needs no dependency.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of `path` (a store folder or index file) while inside."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is preparing %s", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
