"""Preparing a modality's store: one pass over the archive, parallel, resumable, checksummed.

Why this shape:
- Blocks of rows (`layout.BLOCK_BYTES` of images each) are decoded by a pool of processes
  (`dataset.store.workers`, default one per core), each writing its block straight into the
  store files with positioned writes: memory is a block per worker, whatever the archive's size,
  and no pixel crosses a pipe.
- Resumable: a block is recorded in `progress.jsonl` only after the files are synced, so after an
  interruption (Ctrl-C, a killed job, a full disk) the next run continues with the blocks not
  recorded; the manifest, written last and atomically, is what marks the store complete, so a
  half-written store is never read.
- Space is reserved up front (`posix_fallocate`): a disk too small fails before any decoding,
  with the sizes in the message; a disk that fills anyway (another writer) fails with the same
  message, leaving the progress so far for a later run.
- A bad file (missing, corrupt, wrong size) is decoded as a row of zeros and recorded with its
  error; with `dataset.on_error=raise` preparing stops there, naming it (the rows before it are
  kept; fix the file and run again), with `skip` it goes on and counts them, and a run leaves
  those rows out exactly as the readers' skip does.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fed_uml.data.errors import DataError, StoreError
from fed_uml.data.scenes import SceneDataset, SceneRecord
from fed_uml.data.store import layout

log = logging.getLogger(__name__)

COMMIT_SECONDS = 5.0  # how often finished blocks are synced and recorded


@dataclass(frozen=True)
class Plan:
    """What a store holds; a store on disk with another plan is prepared anew."""

    key: str
    rows: int
    shape: tuple[int, int, int]  # (C, H, W)
    dtype: str
    block_rows: int
    settings: dict[str, Any]

    @property
    def blocks(self) -> int:
        """Number of blocks."""
        return -(-self.rows // self.block_rows)

    def block(self, b: int) -> range:
        """The rows of block `b`."""
        return range(b * self.block_rows, min((b + 1) * self.block_rows, self.rows))

    @property
    def row_bytes(self) -> int:
        """Bytes of one image row."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def stats_row_bytes(self) -> int:
        """Bytes of one row's statistics (sum and sum of squares per band, float64)."""
        return self.shape[0] * 2 * 8

    def as_json(self) -> dict[str, Any]:
        """The plan as the store's header records it."""
        return {**asdict(self), "shape": list(self.shape), "format": layout.FORMAT_VERSION}


def make_plan(key: str, rows: int, shape: tuple[int, int, int], dtype: np.dtype, settings: dict[str, Any]) -> Plan:
    """The plan of a store of `rows` images of `shape` and `dtype`, in blocks of about `BLOCK_BYTES`."""
    row_bytes = int(np.prod(shape)) * dtype.itemsize
    block_rows = int(max(1, min(4096, layout.BLOCK_BYTES // max(row_bytes, 1))))
    return Plan(key, rows, (int(shape[0]), int(shape[1]), int(shape[2])), dtype.str, block_rows, settings)


def _disk_full(folder: Path, plan: Plan, err: OSError) -> StoreError:
    need = (plan.row_bytes + plan.stats_row_bytes) * plan.rows
    free = shutil.disk_usage(folder).free
    return StoreError(folder, f"no space left on the device while preparing the store ({need / 2**30:.2f} GiB "
                              f"needed, {free / 2**30:.2f} GiB free: {err.strerror}); free space or set "
                              "dataset.store.dir to a disk with room. Nothing of it is used until it is "
                              "complete; running again resumes it")


# ------------------------------------------------------------------ the files


class StoreFiles:
    """The two data files of a store opened for writing: positioned writes at a row's offset."""

    def __init__(self, folder: Path, plan: Plan):
        self.images_path, self.stats_path = folder / layout.IMAGES, folder / layout.ROWSTATS
        self.images_header = layout.npy_header((plan.rows, *plan.shape), np.dtype(plan.dtype))
        self.stats_header = layout.npy_header((plan.rows, plan.shape[0], 2), np.dtype(np.float64))
        self.plan = plan
        self.images_fd = self.stats_fd = -1

    def open(self, create: bool) -> StoreFiles:
        """Open (or create) the image and statistics files."""
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.images_fd = os.open(self.images_path, flags, 0o644)
        self.stats_fd = os.open(self.stats_path, flags, 0o644)
        return self

    def reserve(self) -> None:
        """Write both headers and reserve every byte (fails at once on a disk too small)."""
        for fd, header, row in ((self.images_fd, self.images_header, self.plan.row_bytes),
                                (self.stats_fd, self.stats_header, self.plan.stats_row_bytes)):
            os.pwrite(fd, header, 0)
            os.posix_fallocate(fd, 0, len(header) + row * self.plan.rows)

    def write_rows(self, start: int, images: np.ndarray, stats: np.ndarray) -> None:
        """Write `images` and their `stats` at row `start`."""
        for fd, header, row, data in ((self.images_fd, self.images_header, self.plan.row_bytes, images),
                                      (self.stats_fd, self.stats_header, self.plan.stats_row_bytes, stats)):
            buf = np.ascontiguousarray(data).data.cast("B")
            offset = len(header) + start * row
            while buf:
                n = os.pwrite(fd, buf, offset)
                buf, offset = buf[n:], offset + n

    def read_block(self, b: int) -> tuple[bytes, bytes]:
        """The image and statistics bytes of block `b`."""
        rows = self.plan.block(b)
        out = []
        for fd, header, row in ((self.images_fd, self.images_header, self.plan.row_bytes),
                                (self.stats_fd, self.stats_header, self.plan.stats_row_bytes)):
            out.append(os.pread(fd, row * len(rows), len(header) + rows.start * row))
        return out[0], out[1]

    def sync(self) -> None:
        """Flush both files to disk."""
        os.fsync(self.images_fd)
        os.fsync(self.stats_fd)

    def close(self) -> None:
        """Close both files."""
        for fd in (self.images_fd, self.stats_fd):
            if fd >= 0:
                os.close(fd)
        self.images_fd = self.stats_fd = -1


# ------------------------------------------------------------------ one block (in a worker)

_WORKER: dict[str, Any] = {}


def _init_worker(reader: SceneDataset, folder: Path, plan: Plan, threads: int | None = 1) -> None:
    if threads:  # a worker process: one thread each, the processes are the parallelism
        import torch

        torch.set_num_threads(threads)
    _WORKER.clear()
    _WORKER.update(reader=reader, files=StoreFiles(folder, plan).open(create=False), plan=plan)


def _prepare_block(job: tuple[int, list[SceneRecord]]) -> dict[str, Any]:
    """Decode, convert and write the rows of block `b`; return its checksum and bad rows."""
    b, records = job
    reader, files, plan = _WORKER["reader"], _WORKER["files"], _WORKER["plan"]
    rows = plan.block(b)
    dtype = np.dtype(plan.dtype)
    images = np.zeros((len(rows), *plan.shape), dtype=dtype)
    bad, clipped = [], 0
    for i, rec in enumerate(records):
        try:
            arr = reader.load(rec)
            if tuple(arr.shape) != plan.shape:
                raise DataError(rec.files.get("folder", rec.scene),
                                f"decoded to shape {tuple(arr.shape)}, the store holds {plan.shape}")
        except DataError as e:
            bad.append([rows.start + i, e.path, e.problem])
            continue
        images[i], n = layout.to_stored(arr, dtype)
        clipped += n
    stats = layout.row_stats(images)
    files.write_rows(rows.start, images, stats)
    return {"block": b, "sha256": layout.block_digest(images.data.cast("B"), stats.data.cast("B")),
            "bad": bad, "clipped": clipped}


# ------------------------------------------------------------------ preparing


def read_progress(folder: Path, plan: Plan) -> dict[int, dict[str, Any]]:
    """Blocks already done under this plan (none when the plan differs or there is no record)."""
    path = folder / layout.PROGRESS
    if not path.is_file():
        return {}
    done = {}
    with open(path) as f:
        lines = f.read().splitlines()
    if not lines or _json(lines[0]) != plan.as_json():
        return {}
    for line in lines[1:]:
        rec = _json(line)
        if rec is not None and isinstance(rec.get("block"), int):  # a torn last line is ignored
            done[rec["block"]] = rec
    return done


def _json(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def start_progress(folder: Path, plan: Plan, kept: dict[int, dict[str, Any]]) -> None:
    """A new progress record for `plan`, holding the blocks `kept`."""
    lines = [json.dumps(plan.as_json())] + [json.dumps(kept[b]) for b in sorted(kept)]
    tmp = folder / (layout.PROGRESS + ".tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / layout.PROGRESS)


def prepare(folder: Path, plan: Plan, records: list[SceneRecord], reader: SceneDataset, processes: int,
            on_error: str, describe: str, split_rows: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Write (or finish) the store in `folder` for `records` (all rows, in order).

    Returns its manifest. The caller holds the store's lock.
    """
    if len(records) != plan.rows:
        raise ValueError(f"{len(records)} records for a plan of {plan.rows} rows")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.MANIFEST).unlink(missing_ok=True)
    done = read_progress(folder, plan)
    files = StoreFiles(folder, plan)
    try:
        files.open(create=True)
        if not done:
            os.ftruncate(files.images_fd, 0)
            os.ftruncate(files.stats_fd, 0)
            start_progress(folder, plan, {})
        files.reserve()
        todo = [b for b in range(plan.blocks) if b not in done]
        if todo:
            log.info("%s: preparing %d of %d rows (%d blocks, %d processes) into %s", describe,
                     sum(len(plan.block(b)) for b in todo), plan.rows, len(todo), min(processes, len(todo)), folder)
        for rec in _run_blocks(folder, plan, records, reader, todo, processes, files, describe, on_error):
            done[rec["block"]] = rec
            if rec["bad"] and on_error == "raise":
                row, path, problem = rec["bad"][0]
                raise DataError(path, f"{problem} (while preparing the store {folder}; fix the file and run again, "
                                      "which resumes, or set dataset.on_error=skip to leave such files out)")
        manifest = _manifest(folder, plan, done, split_rows)
        files.sync()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(folder, plan, e) from None
        raise
    finally:
        files.close()
    try:
        layout.write_json_atomic(folder / layout.MANIFEST, manifest)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(folder, plan, e) from None
        raise
    if manifest["bad_rows"]:
        first = next(iter(manifest["bad_rows"].values()))
        log.warning("%s: %d bad file(s) stored as empty rows and left out of every run "
                    "(dataset.on_error=skip), e.g. %s: %s", describe, len(manifest["bad_rows"]), *first)
    return manifest


def _run_blocks(folder: Path, plan: Plan, records: list[SceneRecord], reader: SceneDataset, todo: list[int],
                processes: int, files: StoreFiles, describe: str, on_error: str) -> Iterator[dict[str, Any]]:
    """Each finished block's record, after the files are synced and the record is appended.

    A block with a bad file under `on_error=raise` is yielded unrecorded (redone on the next run).
    """
    from tqdm.auto import tqdm

    light = copy.copy(reader)  # what a worker needs to decode: the reader without its records
    light.records, light.skipped = [], []
    jobs = ((b, records[plan.block(b).start:plan.block(b).stop]) for b in todo)
    bar = tqdm(total=sum(len(plan.block(b)) for b in todo), unit="patch", desc=describe, disable=None,
               mininterval=2.0, smoothing=0.05)
    pending: list[dict[str, Any]] = []
    last = time.monotonic()
    pool = None
    try:
        if processes <= 1 or len(todo) <= 1:
            _init_worker(light, folder, plan, threads=None)
            results: Iterator[dict[str, Any]] = map(_prepare_block, jobs)
        else:
            ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch's threads run
            pool = ctx.Pool(min(processes, len(todo)), initializer=_init_worker, initargs=(light, folder, plan))
            results = pool.imap_unordered(_prepare_block, jobs)
        with open(folder / layout.PROGRESS, "a") as progress:
            for rec in results:
                bar.update(len(plan.block(rec["block"])))
                if rec["bad"] and on_error == "raise":
                    yield from _commit(files, progress, pending)
                    yield rec
                    return
                pending.append(rec)
                if time.monotonic() - last > COMMIT_SECONDS:
                    yield from _commit(files, progress, pending)
                    last = time.monotonic()
            yield from _commit(files, progress, pending)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        if "files" in _WORKER:
            _WORKER.pop("files").close()


def _commit(files: StoreFiles, progress: TextIO, pending: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if not pending:
        return
    files.sync()  # the rows first, then the record that says they are there
    for rec in pending:
        progress.write(json.dumps(rec) + "\n")
    progress.flush()
    os.fsync(progress.fileno())
    done = list(pending)
    pending.clear()
    yield from done


def _manifest(folder: Path, plan: Plan, done: dict[int, dict[str, Any]],
              split_rows: dict[str, tuple[int, int]]) -> dict[str, Any]:
    bad = {str(row): [path, problem] for rec in done.values() for row, path, problem in rec["bad"]}
    stats = np.load(folder / layout.ROWSTATS, mmap_mode="r")
    train = [r for r in range(*split_rows.get("train", (0, 0))) if str(r) not in bad]
    mean, std = (layout.combine_row_stats(np.asarray(stats[train]), plan.shape[1] * plan.shape[2])
                 if train else (np.zeros(0), np.zeros(0)))
    del stats
    return {
        "format": layout.FORMAT_VERSION,
        "plan": plan.as_json(),
        "blocks": [done[b]["sha256"] for b in range(plan.blocks)],
        "bad_rows": bad,
        "clipped_values": sum(done[b]["clipped"] for b in range(plan.blocks)),
        "splits": {k: list(v) for k, v in split_rows.items()},
        "train_band_mean": mean.tolist(),
        "train_band_std": std.tolist(),
        "files": {name: _file_state(folder / name) for name in (layout.IMAGES, layout.ROWSTATS)},
        "prepared_unix": time.time(),
    }


def _file_state(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def file_states(folder: Path) -> dict[str, list[int]]:
    """Size and modification time of each store file in `folder`: a change means a writer touched it."""
    return {name: _file_state(folder / name) for name in (layout.IMAGES, layout.ROWSTATS)
            if (folder / name).is_file()}


def corrupt_blocks(folder: Path, plan: Plan, manifest: dict[str, Any]) -> list[int]:
    """Blocks whose bytes no longer have the checksum recorded (a truncated file: every block past its end)."""
    files = StoreFiles(folder, plan).open(create=False)
    try:
        bad = []
        for b in range(plan.blocks):
            images, stats = files.read_block(b)
            if layout.block_digest(images, stats) != manifest["blocks"][b]:
                bad.append(b)
        return bad
    finally:
        files.close()


def keep_good_blocks(folder: Path, plan: Plan, manifest: dict[str, Any], corrupt: list[int]) -> None:
    """Turn a complete store with corrupt blocks back into progress without them (resumed next)."""
    bad_rows = manifest["bad_rows"]
    kept = {}
    for b, sha in enumerate(manifest["blocks"]):
        if b in corrupt:
            continue
        rows = plan.block(b)
        kept[b] = {"block": b, "sha256": sha, "clipped": 0,
                   "bad": [[int(r), *bad_rows[r]] for r in map(str, rows) if r in bad_rows]}
    (folder / layout.MANIFEST).unlink(missing_ok=True)
    start_progress(folder, plan, kept)
