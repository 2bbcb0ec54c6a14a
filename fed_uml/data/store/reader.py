"""Reading rows of a complete store: positioned reads of only the rows asked for.

Why positioned reads (`os.preadv`) rather than a memory map: both go through the page cache, so
every process on the machine (every simulated institution) shares one cached copy of the file.
But the pages of a map count in each process's resident memory once touched, so a process that
streamed a whole epoch would show the whole store as its own; a read copies only the batch into
the process, and its memory stays a batch whatever the store's size. The file itself is a plain
.npy that `np.load(mmap_mode="r")` maps, for anyone who wants that.

`bytes_read` counts what this process asked of stores (the benchmark's "bytes read"); with the
environment variable FED_UML_STORE_READS set to a folder, each process keeps its count in
`<folder>/<pid>` (so that a simulation's actors can be added up).
"""

from __future__ import annotations

import atexit
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fed_uml.data.store import layout

READS_ENV = "FED_UML_STORE_READS"
_REPORT_EVERY = 64 << 20


class _ReadCounter:
    def __init__(self) -> None:
        self.total = 0
        self._reported = 0
        self._folder = os.environ.get(READS_ENV)
        if self._folder:
            atexit.register(self.report)

    def add(self, n: int) -> None:
        self.total += n
        if self._folder and self.total - self._reported >= _REPORT_EVERY:
            self.report()

    def report(self) -> None:
        if not self._folder:
            return
        self._reported = self.total
        folder = Path(self._folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"pid": os.getpid(), "bytes_read": self.total}))
        os.replace(tmp, folder / str(os.getpid()))


READS = _ReadCounter()


class StoreFile:
    """A complete store opened for reading (its manifest checked by `fed_uml.data.store.open`)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = Path(folder)
        self.manifest = manifest
        plan = manifest["plan"]
        self.shape = tuple(plan["shape"])  # (C, H, W)
        self.rows = int(plan["rows"])
        self.dtype = np.dtype(plan["dtype"])
        self.row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.offset = len(layout.npy_header((self.rows, *self.shape), self.dtype))
        self.bad_rows = {int(r): tuple(v) for r, v in manifest["bad_rows"].items()}
        self._fd = -1
        self._pid = -1

    @property
    def fd(self) -> int:
        """The image file's descriptor in this process (a forked child opens its own)."""
        if self._fd < 0 or self._pid != os.getpid():  # a forked child opens its own
            self._fd = os.open(self.folder / layout.IMAGES, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": -1, "_pid": -1}

    def __del__(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)

    @cached_property
    def row_stats(self) -> np.ndarray:
        """(N, C, 2) per-row band mean and M2, mapped (only the rows a subset touches are read)."""
        return np.load(self.folder / layout.ROWSTATS, mmap_mode="r")

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows `rows` (k,), in that order, as (k, C, H, W) in the stored dtype.

        Rows are read in file order, consecutive ones in one call, then put in the asked order.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.rows:
            raise IndexError(f"row out of range [0, {self.rows}) of the store {self.folder}")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        flat = out.reshape(len(rows), -1).view(np.uint8)
        staged = np.empty_like(flat)
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        start = 0
        fd = self.fd
        for end in [*breaks.tolist(), len(rows)]:
            first, count = int(sorted_rows[start]), end - start
            view = staged[start:end].data.cast("B")
            offset, got = self.offset + first * self.row_bytes, 0
            while got < len(view):
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    raise OSError(f"{self.folder / layout.IMAGES}: ends before row {first + count} (truncated?)")
                got += n
            start = end
        flat[order] = staged
        READS.add(len(rows) * self.row_bytes)
        return out
