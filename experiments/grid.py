"""Run many centralized runs (a grid of settings x seeds) in parallel worker processes.

Each job writes `results.json` and `run.log` into its own directory and is skipped when its
results.json already exists, so an interrupted grid continues where it stopped and nothing
that finished is lost; a job interrupted in the middle resumes from its training checkpoint
(`resume=true`), and `force` redoes finished jobs (`overwrite=true`). Every job's settings are
checked before the first job starts. A failing job is logged and the grid goes on. Also the pieces the
grid scripts share: comma-separated arguments (`names`, `ints`), CSV output (`write_csv`)
and the end of their `main` (`finish`).
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One centralized run: Hydra overrides and the directory that receives its results."""

    overrides: tuple[str, ...]
    out: Path

    @property
    def done(self) -> bool:
        """Whether the job's results.json exists."""
        return (self.out / "results.json").exists()


def job_config(job: Job, force: bool = False) -> dict:
    """The resolved settings of `job`.

    An unfinished job resumes (from its checkpoint, if it has one), a forced one replaces what its
    folder holds.
    """
    from fed_uml.federated.config import compose_config

    cfg = compose_config(job.overrides)
    cfg["results_dir"] = str(job.out)  # set after composing: any path, even one Hydra would not parse
    cfg["resume"], cfg["overwrite"] = not force, force
    return cfg


def check_jobs(jobs: Sequence[Job]) -> None:
    """Every job's settings, checked before the first job starts (`fed_uml.preflight`)."""
    from fed_uml.errors import SettingsError
    from fed_uml.preflight import check_centralized

    for job in jobs:
        try:
            check_centralized(job_config(job), job.out)
        except SettingsError as e:
            raise SettingsError(f"job {job.out} ({' '.join(job.overrides)}): {e}") from None


def run_job(job: Job, threads: int = 1, force: bool = False) -> dict:
    """Run `job` in this process (results.json + run.log in `job.out`); returns the results.

    `threads` torch threads (0: leave torch's setting; a `num_threads=` override still wins).
    """
    import torch

    from fed_uml.centralized import run_centralized

    if threads > 0:
        torch.set_num_threads(threads)
    cfg = job_config(job, force)
    job.out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(job.out / "run.log", mode="w")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        return run_centralized(cfg, job.out)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def _worker(job: Job, threads: int, force: bool = False) -> tuple[Job, float, str | None]:
    t0 = time.perf_counter()
    try:
        run_job(job, threads, force)
        return job, time.perf_counter() - t0, None
    except Exception as exc:  # noqa: BLE001  (one failing run must not stop the grid)
        return job, time.perf_counter() - t0, f"{exc!r}\n{traceback.format_exc()}"


def run_jobs(jobs: Sequence[Job], workers: int = 1, threads: int = 1, force: bool = False) -> list[tuple[Job, str]]:
    """Run the jobs not yet done (all of them with `force`), `workers` at a time.

    One process each (in this process for one worker), `threads` torch threads each (see `run_job`);
    returns (job, first line of the error) of the failures.
    """
    todo = [j for j in jobs if force or not j.done]
    check_jobs(todo)
    log.info("%d of %d runs to do (%d done), %d worker(s)", len(todo), len(jobs), len(jobs) - len(todo), workers)
    failures: list[tuple[Job, str]] = []
    t0 = time.perf_counter()

    def report(i: int, job: Job, seconds: float, error: str | None) -> None:
        state = "FAILED" if error else "done"
        log.info("[%d/%d] %s %s (%.0f s, %.0f s elapsed)", i, len(todo), state, job.out, seconds,
                 time.perf_counter() - t0)
        if error:
            log.error("%s: %s", job.out, error)
            failures.append((job, error.splitlines()[0]))

    if workers <= 1:
        for i, job in enumerate(todo, 1):
            report(i, *_worker(job, threads, force))
        return failures
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_worker, job, threads, force) for job in todo]
        for i, fut in enumerate(as_completed(futures), 1):
            report(i, *fut.result())
    return failures


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts with the same keys) as a CSV file; nothing is written for no rows."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def names(text: str) -> list[str]:
    """A comma-separated command-line list: its non-empty items, stripped."""
    return [x.strip() for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    """A comma-separated list of integers (seeds, sizes)."""
    return [int(x) for x in names(text)]


def finish(summary: str, written: str, failures: Sequence[tuple[Job, str]]) -> int:
    """The end of a grid script.

    Print its summary table, what it wrote and every failed run; returns the exit status (1 if a run
    failed).
    """
    print(summary)
    print(written)
    for job, error in failures:
        print(f"FAILED {job.out}: {error}")
    return 1 if failures else 0
