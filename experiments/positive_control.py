"""The positive control: one sensor split in two "modalities" must gain like pooled data.

`rgb` and `rgb2` are the same synthetic optical sensor (bands B04, B03, B02) on DISJOINT
scenes, `--per-class` training scenes each. The answer is known: UML on the two halves sees
twice the data of either half alone through one shared backbone, so it must beat the
unimodal model of each half and approach one model trained on the pooled data. If it does
not, the implementation is wrong, not the data. Arms (same seeds, same test sets):

- `uml`: aligned projection init (the default), calibrated h_k deployed;
- `uml_independent`: today's former default, one random projection per half;
- `unimodal`: one model per half, the same optimiser steps it gets inside UML;
- `pooled`: one model on the union of both halves (an epoch = one pass over the union).

Writes `runs/<arm>/seed<k>/results.json`, `positive_control_runs.csv` (one row per arm, seed
and half) and `positive_control.csv` (per arm and half: mean, std, the paired difference
arm - unimodal with its 95% t interval, and the accuracy before and after calibration);
prints the table.

    python -m experiments.positive_control --seeds 0,1,2,3,4 --workers 2
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from experiments.cli import run_main
from experiments.grid import Job, finish, ints, names, run_jobs, write_csv
from experiments.stats import mean_std, paired_difference
from fed_uml.results import read_results

log = logging.getLogger(__name__)

HALVES = ("rgb", "rgb2")
ARMS: dict[str, tuple[str, ...]] = {
    "uml": ("method=uml",),
    "uml_independent": ("method=uml", "model.projection_init=independent"),
    "unimodal": ("method=unimodal",),
    "pooled": ("method=pooled",),
}
BASELINE = "unimodal"


def control_overrides(per_class: int) -> list[str]:
    return [
        "dataset=synthetic",
        f"dataset.modalities=[{','.join(HALVES)}]",
        "+dataset.sensors.rgb2={sensor:optical,bands:[B04,B03,B02]}",
        f"dataset.samples_per_class={per_class}",
    ]


def make_jobs(root: Path, seeds: Sequence[int], per_class: int, arms: Sequence[str], extra: Sequence[str]) -> dict:
    return {
        (arm, seed): Job((*control_overrides(per_class), *ARMS[arm], f"seed={seed}", *extra),
                         root / "runs" / arm / f"seed{seed}")
        for arm in arms for seed in seeds
    }


def summarise(jobs: dict, root: Path) -> list[dict]:
    """Write the per-run and summary CSVs; returns the summary rows."""
    acc: dict[tuple[str, str], dict[int, dict]] = {}
    runs = []
    for (arm, seed), job in jobs.items():
        if not job.done:
            continue
        for k, m in read_results(job.out / "results.json")["modalities"].items():
            acc.setdefault((arm, k), {})[seed] = m
            runs.append({"arm": arm, "seed": seed, "modality": k, "accuracy": m["accuracy"],
                         "accuracy_before_calibration": m["accuracy_before_calibration"],
                         "accuracy_after_calibration": m["accuracy_after_calibration"],
                         "optimizer_steps": m.get("optimizer_steps", "")})
    write_csv(root / "positive_control_runs.csv", runs)
    rows = []
    for (arm, k), per_seed in sorted(acc.items()):
        values = [m["accuracy"] for m in per_seed.values()]
        mean, std = mean_std(values)
        base = {s: m["accuracy"] for s, m in acc.get((BASELINE, k), {}).items()}
        diff = paired_difference({s: m["accuracy"] for s, m in per_seed.items()}, base)
        cal = paired_difference({s: m["accuracy_after_calibration"] for s, m in per_seed.items()},
                                {s: m["accuracy_before_calibration"] for s, m in per_seed.items()})
        rows.append({
            "arm": arm, "modality": k, "n_seeds": len(values), "mean": mean, "std": std,
            "diff_vs_unimodal": diff.mean, "ci_low": diff.low, "ci_high": diff.high,
            "before_calibration": mean_std([m["accuracy_before_calibration"] for m in per_seed.values()])[0],
            "after_calibration": mean_std([m["accuracy_after_calibration"] for m in per_seed.values()])[0],
            "calibration_change": cal.mean, "calibration_ci_low": cal.low, "calibration_ci_high": cal.high,
        })
    write_csv(root / "positive_control.csv", rows)
    return rows


def to_markdown(rows: list[dict]) -> str:
    from experiments.stats import Paired

    lines = ["| arm | half | accuracy % (mean ± std) | arm − unimodal, 95% CI | calibration: after − before |",
             "|---|---|---|---|---|"]
    for r in rows:
        diff = Paired(r["diff_vs_unimodal"], r["ci_low"], r["ci_high"], r["n_seeds"])
        cal = Paired(r["calibration_change"], r["calibration_ci_low"], r["calibration_ci_high"], r["n_seeds"])
        lines.append(f"| {r['arm']} | {r['modality']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} "
                     f"(n={r['n_seeds']}) | {'—' if r['arm'] == BASELINE else diff.text()} | {cal.text()} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0-4)")
    p.add_argument("--per-class", type=int, default=20, help="training scenes per class in each half")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms of {list(ARMS)}")
    p.add_argument("--out", default="results/positive_control", help="output directory")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (one process each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. training.epochs=10)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    arms = names(args.arms)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"--arms: unknown arm(s) {unknown}; known: {list(ARMS)}")
    if BASELINE not in arms:
        p.error(f"--arms must include the baseline {BASELINE!r} (the paired differences need it)")
    root = Path(args.out)
    jobs = make_jobs(root, ints(args.seeds), args.per_class, arms, args.overrides)
    failures = run_jobs(list(jobs.values()), workers=args.workers, threads=args.threads)
    rows = summarise(jobs, root)
    written = f"\nwrote {root / 'positive_control.csv'} and {root / 'positive_control_runs.csv'}"
    return finish(to_markdown(rows), written, failures)


if __name__ == "__main__":
    run_main(main)
