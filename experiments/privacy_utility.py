"""Privacy against utility, and the cost of secure aggregation, from one invocation.

    python -m experiments.privacy_utility --institutions 100 --seeds 0,1,2 --noise 0,0.3,0.6,1,2 \
        --clipping-norm 1.0 --cost-institutions 8,100 --out results/privacy_utility [overrides...]

1. Utility: for federated UML and the federated unimodal baseline, every seed and every noise
   multiplier z (0: no noise, the non-private reference), one simulated run of N institutions
   with institution-level DP (`dp-clipping-norm`, `dp-noise-multiplier`); each run's final
   epsilon (at `dp-delta`, from results.json) and its accuracy per modality after calibration
   go into `privacy_utility.csv`; `privacy_utility.png` plots accuracy against epsilon per
   modality (mean and spread over seeds; the non-private runs at the right edge).
2. Cost: for every N in `--cost-institutions`, the same UML job (first seed, no DP) with plain
   FedAvg and with secure aggregation (SecAgg+): wall time of the rounds, seconds per round and
   bytes per round through the server (plain: the backbone down and up for every institution;
   secure: every SecAgg+ message of the four stages, keys and shares included) into
   `secagg_cost.csv` and a markdown table `secagg_cost.md`. `--secure-overrides` passes
   settings to the secure runs only (e.g. federated.secure_num_shares=0.1 at N = 100: each
   institution shares its secrets with a tenth of the group instead of all of it).

Extra Hydra overrides (dataset, model, rounds, ...) apply to every run. Runs go one after
another through one private Flower SuperLink (localrun.flower.FlowerRuntime), or with
`--engine inprocess` through the in-process engine (localrun.inprocess: the same apps, no
start-up per run, one institution at a time, so its seconds are not Flower's).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import time
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

from experiments.cli import run_main
from fed_uml.federated.config import run_config_from_overrides
from localrun.flower import FlowerRuntime
from localrun.inprocess import ENGINES, run_inprocess


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run_one(rt: FlowerRuntime | None, workdir: Path, name: str, overrides: list[str], n: int, cpus: int) -> dict:
    """One run through `rt` (`flwr run`), or the in-process engine where `rt` is None."""
    results_dir = workdir / name
    run_config = run_config_from_overrides(overrides, **{"results-dir": str(results_dir)})
    t0 = time.perf_counter()
    if rt is None:
        results = run_inprocess(run_config, n, cpus)
        results["_wall_s"] = time.perf_counter() - t0
        return results
    proc = rt.run(run_config, {"num-supernodes": n, "client-resources-num-cpus": cpus})
    wall = time.perf_counter() - t0
    if not (results_dir / "results.json").exists():  # the ServerApp failed: say how
        raise RuntimeError(f"run {name} wrote no results.json; its output ends:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    results = json.loads((results_dir / "results.json").read_text())
    results["_wall_s"] = wall
    return results


def utility_rows(results: dict, method: str, seed: int, noise: float) -> list[dict]:
    """One row per modality: the accuracy of a run and the epsilon it spent."""
    history = results.get("history") or [{}]
    eps = history[-1].get("dp_epsilon", math.inf) if noise > 0 else math.inf
    return [{"method": method, "seed": seed, "noise_multiplier": noise, "epsilon": eps, "modality": m,
             "accuracy": mod.get("accuracy_after_calibration", mod.get("accuracy")),
             "accuracy_before_calibration": mod.get("accuracy_before_calibration")}
            for m, mod in sorted(results["modalities"].items())]


def cost_row(results: dict, n: int, secure: bool) -> dict:
    """The time and bytes per round of a run, plain or with secure aggregation."""
    history = results["history"]
    rounds = len(history)
    seconds = sum(r["seconds"] for r in history)
    if secure:
        per_round = sum(r.get("secure_bytes_down", 0) + r.get("secure_bytes_up", 0) for r in history) / rounds
    else:  # the backbone to every participant and back
        per_round = sum(2 * r["participants"] * r["bytes_sent_per_institution"] for r in history) / rounds
    return {"institutions": n, "aggregation": "secagg+" if secure else "fedavg", "rounds": rounds,
            "round_seconds": seconds / rounds, "rounds_wall_s": seconds, "run_wall_s": results["_wall_s"],
            "bytes_per_round": per_round, "bytes_per_institution_round": per_round / n}


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write `rows` as a CSV with their keys as the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def cost_table(rows: list[dict]) -> str:
    """The cost rows as a Markdown table, relative to plain FedAvg at the same institution count."""
    lines = ["| institutions | aggregation | s / round | bytes / round | bytes / institution / round | "
             "vs FedAvg (time, bytes) |", "|---|---|---|---|---|---|"]
    plain = {r["institutions"]: r for r in rows if r["aggregation"] == "fedavg"}
    for r in rows:
        p = plain.get(r["institutions"])
        rel = (f"{r['round_seconds'] / p['round_seconds']:.2f}x, {r['bytes_per_round'] / p['bytes_per_round']:.2f}x"
               if p else "")
        lines.append(f"| {r['institutions']} | {r['aggregation']} | {r['round_seconds']:.2f} | "
                     f"{r['bytes_per_round']:.3g} | {r['bytes_per_institution_round']:.3g} | {rel} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Plot accuracy against epsilon per method and modality to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    modalities = sorted({r["modality"] for r in rows})
    fig, axes = plt.subplots(1, len(modalities), figsize=(4.5 * len(modalities), 3.6), squeeze=False)
    finite = [r["epsilon"] for r in rows if math.isfinite(r["epsilon"])]
    right = (max(finite) * 3) if finite else 10.0  # where the non-private runs are drawn
    for ax, m in zip(axes[0], modalities, strict=True):
        for method in sorted({r["method"] for r in rows}):
            sel = [r for r in rows if r["modality"] == m and r["method"] == method]
            by_noise: dict[float, list[dict]] = {}
            for r in sel:
                by_noise.setdefault(r["noise_multiplier"], []).append(r)
            pts = []
            for z, rs in by_noise.items():
                eps = [r["epsilon"] if math.isfinite(r["epsilon"]) else right for r in rs]
                acc = [r["accuracy"] for r in rs]
                pts.append((float(np.mean(eps)), float(np.mean(acc)), float(np.std(acc))))
            pts.sort()
            x, y, s = (np.array(v) for v in zip(*pts, strict=True))
            ax.errorbar(x, y, yerr=s, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.axvline(right, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{m}")
        ax.set_xlabel("epsilon (non-private at the dotted line)")
        ax.set_ylabel("test accuracy after calibration")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Run the privacy-utility study from the command line; returns its rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--institutions", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--noise", default="0,0.3,0.6,1,2", help="noise multipliers (0: no noise, non-private)")
    ap.add_argument("--clipping-norm", type=float, default=1.0)
    ap.add_argument("--methods", default="uml,unimodal")
    ap.add_argument("--cost-institutions", default="8,100", help="N of the SecAgg+ cost table ('' to skip)")
    ap.add_argument("--secure-overrides", default="", help="Hydra overrides of the secure cost runs only")
    ap.add_argument("--cpus-per-client", type=int, default=1)
    ap.add_argument("--engine", choices=ENGINES, default="flwr",
                    help="flwr: `flwr run` (the default); inprocess: the same apps in this process")
    ap.add_argument("--out", default="results/privacy_utility")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    base = list(args.overrides)
    util, cost = [], []
    with TemporaryDirectory(prefix="privacy-utility-") as tmp, ExitStack() as stack:
        rt = None
        if args.engine == "flwr":
            rt = stack.enter_context(FlowerRuntime(Path(tmp) / "flower"))
            rt.start_superlink(simulation=True)
        work = Path(tmp)
        for method in args.methods.split(","):
            for seed in _ints(args.seeds):
                for z in _floats(args.noise):
                    dp = [f"federated.dp_clipping_norm={args.clipping_norm}", f"federated.dp_noise_multiplier={z}"]
                    name = f"{method}-s{seed}-z{z}"
                    res = run_one(rt, work, name, base + [f"method={method}", f"seed={seed}", *dp],
                                  args.institutions, args.cpus_per_client)
                    util += utility_rows(res, method, seed, z)
                    print(f"{name}: " + ", ".join(f"{r['modality']}={r['accuracy']:.4f}" for r in util[-2:])
                          + f", epsilon={util[-1]['epsilon']:.3g}", flush=True)
        seed = _ints(args.seeds)[0]
        for n in _ints(args.cost_institutions):
            for secure in (False, True):
                extra = ["federated.secure_aggregation=true", *shlex.split(args.secure_overrides)] if secure else []
                res = run_one(rt, work, f"cost-n{n}-{'secure' if secure else 'plain'}",
                              base + ["method=uml", f"seed={seed}", *extra], n, args.cpus_per_client)
                cost.append(cost_row(res, n, secure))
                print(cost[-1], flush=True)
    if util:
        write_csv(out / "privacy_utility.csv", util)
        plot(util, out / "privacy_utility.png")
    if cost:
        write_csv(out / "secagg_cost.csv", cost)
        (out / "secagg_cost.md").write_text(cost_table(cost) + "\n")
        print(cost_table(cost))
    return {"utility": util, "cost": cost}


if __name__ == "__main__":
    run_main(main)
