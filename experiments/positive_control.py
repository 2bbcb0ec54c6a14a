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

`--federated` runs the federated control instead, through `flwr run` (a private local
SuperLink, Ray simulation, `simulation.*` settings: 4 SuperNodes, so 2 institutions per
half; `simulation.engine=inprocess` runs the same apps in this process, for development):

- `uml`: federated UML, every institution of both halves in one averaging group;
- `unimodal`: the federated unimodal baseline, each half's institutions averaged among
  themselves (one group per half);
- `pooled`: federated pooling: the institutions do not know of two halves. In every
  federated arm an institution's projection and BN statistics stay private (never
  averaged), so what pooling can change is only which institutions average the backbone
  together and whether they are told apart. Pooled is therefore the federation of ONE
  modality: as many institutions (4), each as large (`--per-class` / 2 scenes per class),
  drawn from one half's sensor with 2 x `--per-class` scenes per class, one averaging group,
  UML's training and calibration (`method=uml` on one modality). It runs once per half (the
  modality named `rgb`, then `rgb2`) so that each half's test set scores it. Its data are
  other draws of the same sensor than the halves' (the generator is keyed by modality
  name), so its pairing by seed shares the initialisation and the test set, not the
  training scenes. UML must match it and both must beat the unimodal baseline; a UML that
  falls to the unimodal baseline means the federated code groups or weighs the halves
  wrongly.

The comparison of record is against the stronger of the unimodal baseline as trained and
after Algorithm 1 in each setting and half (`experiments.stats.stronger_baseline`).

Writes `runs/<arm>/seed<k>/results.json` (federated: `runs/federated/...`),
`positive_control_runs.csv` (one row per setting, arm, seed and half, with the engine that
ran it) and `positive_control.csv` (per setting, arm and half: mean, std, the paired
difference arm - unimodal baseline with its 95% t interval and which form of the baseline
it is, arm - pooled, and the accuracy before and after calibration); prints the table.

    python -m experiments.positive_control --seeds 0,1,2,3,4 --workers 2
    flock /tmp/fed-uml-flower.lock python -m experiments.positive_control --federated --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from experiments.cli import run_main
from experiments.grid import Job, finish, ints, names, run_jobs, write_csv
from experiments.stats import CALIBRATED, Paired, mean_std, paired_difference, stronger_baseline
from fed_uml.results import read_results

log = logging.getLogger(__name__)

HALVES = ("rgb", "rgb2")
ARMS: dict[str, tuple[str, ...]] = {
    "uml": ("method=uml",),
    "uml_independent": ("method=uml", "model.projection_init=independent"),
    "unimodal": ("method=unimodal",),
    "pooled": ("method=pooled",),
}
FEDERATED_ARMS = ("uml", "unimodal", "pooled")
BASELINE, POOLED = "unimodal", "pooled"
CENTRALIZED, FEDERATED = "centralized", "federated"


def control_overrides(per_class: int, halves: Sequence[str] = HALVES) -> list[str]:
    """Overrides of the control: one synthetic scene set split into two halves as two modalities."""
    return [
        "dataset=synthetic",
        f"dataset.modalities=[{','.join(halves)}]",
        "+dataset.sensors.rgb2={sensor:optical,bands:[B04,B03,B02]}",
        f"dataset.samples_per_class={per_class}",
    ]


def make_jobs(root: Path, seeds: Sequence[int], per_class: int, arms: Sequence[str], extra: Sequence[str]) -> dict:
    """The control's jobs, one per (arm, seed)."""
    return {
        (arm, seed): Job((*control_overrides(per_class), *ARMS[arm], f"seed={seed}", *extra),
                         root / "runs" / arm / f"seed{seed}")
        for arm in arms for seed in seeds
    }


def federated_jobs(root: Path, seeds: Sequence[int], per_class: int, arms: Sequence[str],
                   extra: Sequence[str]) -> dict[tuple[str, int, str], Job]:
    """(arm, seed, part) -> Job: part "" for a run of both halves, the half's name for a pooled run."""
    jobs = {}
    for seed in seeds:
        for arm in arms:
            parts = HALVES if arm == POOLED else ("",)
            for part in parts:
                data = control_overrides(2 * per_class, [part]) if part else control_overrides(per_class)
                method = "method=uml" if arm == POOLED else f"method={arm}"
                name = f"{arm}-{part}" if part else arm
                # absolute: the Flower processes resolve the results folder from their own directory
                jobs[(arm, seed, part)] = Job((*data, method, f"seed={seed}", *extra),
                                              (root / "runs" / FEDERATED / name / f"seed{seed}").resolve())
    return jobs


def run_federated_jobs(jobs: dict[tuple[str, int, str], Job]) -> list[tuple[Job, str]]:
    """Every federated job not yet done, one after another (each simulation takes the whole machine).

    Every job's settings are checked before the first starts. Returns the failures.
    """
    from experiments.sweep import run_federated
    from fed_uml.errors import SettingsError
    from fed_uml.federated.config import compose_config
    from fed_uml.preflight import check_federated
    from localrun.inprocess import check_engine

    todo = [j for j in jobs.values() if not j.done]
    for job in todo:
        try:
            cfg = compose_config(job.overrides)
            check_federated(cfg, job.out)
            check_engine(cfg["simulation"].get("engine", "flwr"))
        except SettingsError as e:
            raise SettingsError(f"job {job.out} ({' '.join(job.overrides)}): {e}") from None
    failures = []
    for i, job in enumerate(todo, 1):
        log.info("[%d/%d] federated %s", i, len(todo), job.out)
        job.out.mkdir(parents=True, exist_ok=True)
        try:
            run_federated(compose_config(job.overrides), list(job.overrides), job.out / "flower", job.out)
        except Exception as exc:  # noqa: BLE001  (one failing run must not stop the control)
            log.error("federated run %s failed: %r", job.out, exc)
            failures.append((job, repr(exc).splitlines()[0]))
    return failures


def _read(path: Path) -> dict:
    results = read_results(path)
    engine = (results.get("config") or {}).get("simulation", {}).get("engine", "") if results["federated"] else ""
    return {k: {**m, "engine": engine} for k, m in results["modalities"].items()}


def collect(root: Path, seeds: Sequence[int], per_class: int, extra: Sequence[str]
            ) -> dict[tuple[str, str, str], dict[int, dict]]:
    """Every finished run of the control under `root`, centralized and federated, by setting and arm.

    Returns (setting, arm, half) -> {seed: that half's entry of results.json, plus `engine`}.
    """
    out: dict[tuple[str, str, str], dict[int, dict]] = {}
    central = make_jobs(root, seeds, per_class, list(ARMS), extra)
    for (arm, seed), job in central.items():
        if job.done:
            for k, m in _read(job.out / "results.json").items():
                out.setdefault((CENTRALIZED, arm, k), {})[seed] = m
    fed = federated_jobs(root, seeds, per_class, FEDERATED_ARMS, extra)
    for (arm, seed, part), job in fed.items():
        if job.done:
            for k, m in _read(job.out / "results.json").items():
                out.setdefault((FEDERATED, arm, k), {})[seed] = m
    return out


def summarise(acc: dict[tuple[str, str, str], dict[int, dict]], root: Path) -> list[dict]:
    """Write the per-run and summary CSVs; returns the summary rows."""
    runs = [{"setting": setting, "arm": arm, "seed": seed, "modality": k, "accuracy": m["accuracy"],
             "accuracy_before_calibration": m["accuracy_before_calibration"],
             "accuracy_after_calibration": m["accuracy_after_calibration"],
             "optimizer_steps": m.get("optimizer_steps", ""), "engine": m["engine"]}
            for (setting, arm, k), per_seed in sorted(acc.items()) for seed, m in sorted(per_seed.items())]
    write_csv(root / "positive_control_runs.csv", runs)
    rows = []
    for (setting, arm, k), per_seed in sorted(acc.items()):
        values = {s: m["accuracy"] for s, m in per_seed.items()}
        mean, std = mean_std(list(values.values()))
        base_runs = acc.get((setting, BASELINE, k), {})
        base, variant = stronger_baseline({s: m["accuracy_before_calibration"] for s, m in base_runs.items()},
                                          {s: m["accuracy_after_calibration"] for s, m in base_runs.items()})
        diff = paired_difference(values, base)
        vs_pooled = paired_difference(values, {s: m["accuracy"] for s, m in acc.get((setting, POOLED, k), {}).items()})
        cal = paired_difference({s: m["accuracy_after_calibration"] for s, m in per_seed.items()},
                                {s: m["accuracy_before_calibration"] for s, m in per_seed.items()})
        rows.append({
            "setting": setting, "arm": arm, "modality": k, "n_seeds": len(values), "mean": mean, "std": std,
            "baseline_variant": variant, "baseline_mean": mean_std(list(base.values()))[0],
            "diff_vs_unimodal": diff.mean, "ci_low": diff.low, "ci_high": diff.high,
            "diff_vs_pooled": vs_pooled.mean, "pooled_ci_low": vs_pooled.low, "pooled_ci_high": vs_pooled.high,
            "before_calibration": mean_std([m["accuracy_before_calibration"] for m in per_seed.values()])[0],
            "after_calibration": mean_std([m["accuracy_after_calibration"] for m in per_seed.values()])[0],
            "calibration_change": cal.mean, "calibration_ci_low": cal.low, "calibration_ci_high": cal.high,
            "engines": ",".join(sorted({m["engine"] for m in per_seed.values()} - {""})),
        })
    write_csv(root / "positive_control.csv", rows)
    return rows


def to_markdown(rows: list[dict]) -> str:
    """The control's rows as a Markdown table with the paired differences and their CIs."""
    lines = ["| setting | arm | half | accuracy % (mean ± std) | arm − unimodal baseline, 95% CI "
             "| arm − pooled, 95% CI | calibration: after − before |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = Paired(r["diff_vs_unimodal"], r["ci_low"], r["ci_high"], r["n_seeds"])
        pooled = Paired(r["diff_vs_pooled"], r["pooled_ci_low"], r["pooled_ci_high"], r["n_seeds"])
        cal = Paired(r["calibration_change"], r["calibration_ci_low"], r["calibration_ci_high"], r["n_seeds"])
        arm = r["arm"]
        if arm == BASELINE:
            form = "after Algorithm 1" if r["baseline_variant"] == CALIBRATED else "as trained"
            arm = f"unimodal (of record: {form}, {100 * r['baseline_mean']:.2f})"
        lines.append(f"| {r['setting']} | {arm} | {r['modality']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} "
                     f"(n={r['n_seeds']}) | {'—' if r['arm'] == BASELINE else diff.text()} "
                     f"| {'—' if r['arm'] == POOLED else pooled.text()} | {cal.text()} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the positive control from the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0-4)")
    p.add_argument("--per-class", type=int, default=20, help="training scenes per class in each half")
    p.add_argument("--arms", default=None, help=f"comma-separated arms of {list(ARMS)} (federated: "
                   f"{list(FEDERATED_ARMS)}); default all")
    p.add_argument("--federated", action="store_true",
                   help="the federated control through flwr run (simulation.* settings; run one at a time)")
    p.add_argument("--out", default="results/positive_control", help="output directory")
    p.add_argument("--workers", type=int, default=1, help="centralized runs in parallel (one process each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per centralized run")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. training.epochs=10)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    known = list(FEDERATED_ARMS if args.federated else ARMS)
    arms = names(args.arms) if args.arms else known
    unknown = sorted(set(arms) - set(known))
    if unknown:
        p.error(f"--arms: unknown arm(s) {unknown}; known{' federated' if args.federated else ''}: {known}")
    if BASELINE not in arms:
        p.error(f"--arms must include the baseline {BASELINE!r} (the paired differences need it)")
    root, seeds = Path(args.out), ints(args.seeds)
    if args.federated:
        failures = run_federated_jobs(federated_jobs(root, seeds, args.per_class, arms, args.overrides))
    else:
        failures = run_jobs(list(make_jobs(root, seeds, args.per_class, arms, args.overrides).values()),
                            workers=args.workers, threads=args.threads)
    rows = summarise(collect(root, seeds, args.per_class, args.overrides), root)
    written = f"\nwrote {root / 'positive_control.csv'} and {root / 'positive_control_runs.csv'}"
    return finish(to_markdown(rows), written, failures)


if __name__ == "__main__":
    run_main(main)
