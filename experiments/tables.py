r"""Tables 1 and 2 of the study from a directory tree of results.json files, and the grid that fills it.

Make the tables (Markdown printed, Markdown + CSV written with --out):

    python -m experiments.tables RESULTS_ROOT [--out tables/] [--metric accuracy]

Run a grid of methods x seeds on one data set (any Hydra override of experiments.run may
follow), each run writing RESULTS_ROOT/<dataset>/<method>/seed<S>/results.json, then the tables:

    python -m experiments.tables run --methods unimodal,uml,isca,dann,cdan,mcc,mdd --seeds 0,1,2 \
        --root results/compare dataset=synthetic num_threads=1

The layout of the tables and the paired differences are described in `experiments/tabulation.py`;
the runs go through `experiments/grid.py` (one after another, finished runs skipped).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.cli import run_main
from experiments.grid import Job, ints, names, run_jobs
from experiments.tabulation import METRICS, make_tables

log = logging.getLogger(__name__)

# The grid sets these itself, per run.
_GRID_KEYS = ("method", "seed", "results_dir")


def run_dir(root: str | Path, dataset: str, method: str, seed: int) -> Path:
    """Where the run of `method` with `seed` on `dataset` writes its results."""
    return Path(root) / dataset / method / f"seed{seed}"


def grid_jobs(methods: Sequence[str], seeds: Sequence[int], overrides: Sequence[str],
              root: str | Path) -> dict[Job, tuple[str, int]]:
    """One centralized job per method x seed (same overrides for all) -> (method, seed).

    Unknown method names and overrides of method, seed or results_dir fail before anything runs.
    """
    from fed_uml.federated.config import compose_config
    from fed_uml.methods import get_method

    for m in methods:
        get_method(m)  # unknown names fail before anything runs
    bad = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in _GRID_KEYS]
    if bad:
        raise ValueError(f"the grid sets method, seed and results_dir itself; remove {bad}")
    jobs = {}
    for method in methods:
        for seed in seeds:
            job_overrides = (*overrides, f"method={method}", f"seed={seed}")
            dataset = compose_config(job_overrides)["dataset"]["name"]
            jobs[Job(job_overrides, run_dir(root, dataset, method, seed))] = (method, seed)
    return jobs


def run_grid(methods: Sequence[str], seeds: Sequence[int], overrides: Sequence[str], root: str | Path,
             force: bool = False) -> list[tuple[str, int, str]]:
    """Run every method x seed centrally, one after another; returns the failures (method, seed, error).

    A run whose results.json exists is skipped unless `force`. Each run logs to run.log in
    its directory. A failing run is logged and the grid goes on. Torch's thread count is
    left alone (set `num_threads=` among the overrides to choose it).
    """
    jobs = grid_jobs(methods, seeds, overrides, root)
    failures = run_jobs(list(jobs), workers=1, threads=0, force=force)
    return [(*jobs[job], error) for job, error in failures]


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Run methods x seeds, or make the tables from finished runs, from the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if argv and argv[0] == "run":
        p = argparse.ArgumentParser(prog="python -m experiments.tables run",
                                    description="Run methods x seeds centrally, then make the tables.")
        p.add_argument("--methods", required=True, help="comma-separated method names")
        p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
        p.add_argument("--root", default="results/compare", help="results root (default results/compare)")
        p.add_argument("--out", default=None, help="tables directory (default ROOT/tables)")
        p.add_argument("--metric", default=None, choices=METRICS,
                       help="default: each run's headline metric (accuracy; macro mAP for multi-label runs)")
        p.add_argument("--force", action="store_true", help="rerun runs whose results.json exists")
        p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. dataset=synthetic")
        args = p.parse_args(argv[1:])
        failures = run_grid(names(args.methods), ints(args.seeds), args.overrides,
                            args.root, args.force)
        print(make_tables(args.root, args.out or Path(args.root) / "tables", args.metric))
        for method, seed, err in failures:
            print(f"FAILED: {method} seed {seed}: {err}", file=sys.stderr)
        return 1 if failures else 0
    p = argparse.ArgumentParser(prog="python -m experiments.tables",
                                description="Tables 1 and 2 (mean ± std over seeds) from results.json files.")
    p.add_argument("root", help="directory searched recursively for results.json")
    p.add_argument("--out", default=None, help="write tables.md, table<i>.md/.csv and runs.csv here")
    p.add_argument("--metric", default=None, choices=METRICS,
                   help="default: each run's headline metric (accuracy; macro mAP for multi-label runs)")
    p.add_argument("--digits", type=int, default=2)
    args = p.parse_args(argv)
    print(make_tables(args.root, args.out, args.metric, args.digits))
    return 0


if __name__ == "__main__":
    run_main(main)
