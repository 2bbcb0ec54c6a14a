"""Federated L sweeps with the budget R x L fixed (the study's Figs 8-9).

    python -m experiments.sweep -m federated.local_epochs=2,5,10,25,50 method=uml,unimodal sweep.budget=200

Each Hydra job sets R = sweep.budget / L, runs the Flower apps with `flwr run` on a private
local SuperLink (simulation runtime, `simulation.*` settings; `simulation.engine=inprocess`
runs the same apps in this process instead, without `flwr run`'s start-up per job:
localrun/inprocess.py), reads the results.json the ServerApp wrote, appends a row to
`<sweep dir>/sweep.csv` and redraws `<sweep dir>/sweep.png` (per-modality accuracy against
L, UML solid, unimodal dashed). Rows are written as jobs finish, so a failed or interrupted sweep keeps what it had.
`<sweep dir>/sweep_paired.csv` holds, per L and modality, the per-seed difference UML -
unimodal with its 95% t interval (rewritten with the plot), against the stronger of the
unimodal baseline as trained and after Algorithm 1 in each cell (`baseline_variant`).
`python -m experiments.sweep collect <sweep dir>` redraws the plot from the CSV.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import report_user_errors
from experiments.grid import write_csv
from experiments.stats import paired_rows, stronger_baselines
from fed_uml.federated.config import conf_dir, run_config_from_overrides
from fed_uml.preflight import check_federated
from localrun.flower import FlowerRuntime
from localrun.inprocess import check_engine, run_inprocess

log = logging.getLogger(__name__)
FIELDS = ["method", "weighting", "local_epochs", "local_steps", "rounds", "budget", "seed", "modality", "accuracy",
          "accuracy_before_calibration", "accuracy_after_calibration", "wall_seconds", "engine", "results"]


def rounds_for(budget: int, local_epochs: int) -> int:
    """Rounds that spend `budget` local epochs at `local_epochs` per round."""
    if local_epochs < 1 or budget < local_epochs or budget % local_epochs:
        raise ValueError(f"sweep.budget={budget} is not a multiple of federated.local_epochs={local_epochs}")
    return budget // local_epochs


def run_federated(cfg: dict, overrides: list[str], workdir: Path, results_dir: Path) -> dict:
    """One federated simulation of `overrides`.

    Returns its results.json. `simulation.engine`: `flwr` (`flwr run` on a private local SuperLink
    in `workdir`) or `inprocess` (the same apps in this process, `localrun.inprocess`).
    """
    sim = cfg["simulation"]
    engine = check_engine(sim.get("engine", "flwr"))
    # the engine goes into the run's own settings, so results.json says which one ran it
    overrides = [o for o in overrides if not o.startswith("simulation.engine=")] + [f"simulation.engine={engine}"]
    run_config = run_config_from_overrides(overrides, **{"results-dir": str(results_dir)})
    if engine == "inprocess":
        return run_inprocess(run_config, int(sim["num_supernodes"]), int(sim["client_cpus"]))
    federation = {"num-supernodes": int(sim["num_supernodes"]), "client-resources-num-cpus": int(sim["client_cpus"]),
                  "client-resources-num-gpus": float(sim["client_gpus"])}
    with FlowerRuntime(workdir) as rt:
        rt.start_superlink(simulation=True)
        rt.run(run_config, federation, timeout=24 * 3600)
    return json.loads((results_dir / "results.json").read_text())


def append_rows(csv_path: Path, rows: list[dict]) -> None:
    """Append `rows` to the CSV under a file lock (sweep jobs run in parallel)."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        writer = csv.DictWriter(f, FIELDS)
        if f.tell() == 0:
            writer.writeheader()
        writer.writerows(rows)


def weighting_label(fed: dict) -> str:
    """`federated.weighting` as a sweep row names it: `mixed-<weighting_mix>` for the mixed rule."""
    weighting = fed.get("weighting", "examples")
    return f"mixed-{float(fed.get('weighting_mix', 0.5)):g}" if weighting == "mixed" else weighting


def paired(rows: list[dict], path: Path) -> list[dict]:
    """UML - unimodal per (budget, L, local steps, UML's weighting, modality), paired by seed.

    Against the stronger of the unimodal baseline as trained and after Algorithm 1 in each cell
    (`stronger_baselines`). The unimodal baseline averages within each modality, where every
    weighting gives the same weights, so one baseline run serves UML under every weighting.
    """
    uml, as_trained, calibrated = defaultdict(dict), defaultdict(dict), defaultdict(dict)
    for r in rows:
        cell = (int(r["budget"]), int(r["local_epochs"]), int(r.get("local_steps") or 0))
        seed, weighting = int(r["seed"]), r.get("weighting") or "examples"
        if r["method"] == "uml":
            uml[(*cell, weighting, r["modality"])][seed] = float(r["accuracy"])
        elif r["method"] == "unimodal":
            as_trained[(*cell, r["modality"])][seed] = float(r["accuracy_before_calibration"])
            calibrated[(*cell, r["modality"])][seed] = float(r["accuracy_after_calibration"])
    forms, variants = stronger_baselines(as_trained, calibrated)
    baseline = {key: forms[(*key[:3], key[4])] for key in uml if (*key[:3], key[4]) in forms}
    variant = {key: variants[(*key[:3], key[4])] for key in baseline}
    out = paired_rows(uml, baseline, ("budget", "local_epochs", "local_steps", "weighting", "modality"), variant)
    write_csv(path, out)
    return out


def plot(csv_path: Path) -> Path:
    """Plot the sweep's paired differences; returns the figure's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    series = defaultdict(lambda: defaultdict(list))  # (method, modality) -> L -> accuracies
    for r in rows:
        series[(r["method"], r["modality"])][int(r["local_epochs"])].append(float(r["accuracy"]))
    modalities = sorted({m for _, m in series})
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {m: f"C{i}" for i, m in enumerate(modalities)}
    for (method, modality), by_l in sorted(series.items()):
        ls = sorted(by_l)
        means = [sum(by_l[x]) / len(by_l[x]) for x in ls]
        ax.plot(ls, means, marker="o", color=colors[modality], linestyle="-" if method == "uml" else "--",
                label=f"{method} {modality}")
    budgets = sorted({r["budget"] for r in rows})
    _l_axis(ax, rows)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Federated L sweep, budget R x L = {', '.join(budgets)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = csv_path.with_suffix(".png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    plot_paired(paired(rows, csv_path.with_name("sweep_paired.csv")), csv_path.with_name("sweep_paired.png"))
    return out


def _l_axis(ax: Any, rows: list[dict]) -> None:
    """The x axis of both sweep figures: L on a log scale, one tick per L the rows hold."""
    ax.set_xscale("log")
    all_l = sorted({int(r["local_epochs"]) for r in rows})
    ax.set_xticks(all_l, [str(x) for x in all_l])
    ax.minorticks_off()
    ax.set_xlabel("local epochs L (R = budget / L)")


def plot_paired(rows: list[dict], path: Path) -> Path | None:
    """The paired gain UML - stronger unimodal baseline against L, one panel per modality.

    One line per UML weighting (and local-steps setting), its 95% interval as a band (none for
    one seed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:  # one seed: a line without a band (its interval is nan)
        return None
    modalities = sorted({r["modality"] for r in rows})
    fig, axes = plt.subplots(1, len(modalities), figsize=(4.5 * len(modalities), 3.6), squeeze=False)
    lines = sorted({(r["weighting"], int(r["local_steps"]), int(r["budget"])) for r in rows})
    for ax, modality in zip(axes[0], modalities, strict=True):
        for i, (weighting, steps, budget) in enumerate(lines):
            pts = sorted((int(r["local_epochs"]), 100 * r["diff"], 100 * r["ci_low"], 100 * r["ci_high"])
                         for r in rows if (r["modality"], r["weighting"], int(r["local_steps"]), int(r["budget"]))
                         == (modality, weighting, steps, budget))
            ls, mean, low, high = zip(*pts)
            label = weighting + (f", {steps} local steps" if steps else "") + (
                f", R x L = {budget}" if len({b for *_, b in lines}) > 1 else "")
            ax.errorbar(ls, mean, yerr=[[m - lo for m, lo in zip(mean, low)], [hi - m for m, hi in zip(mean, high)]],
                        marker="o", capsize=3, color=f"C{i}", label=label)
            ax.fill_between(ls, low, high, color=f"C{i}", alpha=0.15)
        ax.axhline(0, color="k", lw=0.8)
        _l_axis(ax, rows)
        ax.set_ylabel("UML − unimodal (points)")
        ax.set_title(f"{modality}: paired gain, 95% CI", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="UML weighting", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one federated job of the sweep and append its rows (Hydra entry point)."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_dir = Path(hc.sweep.dir) if hc.mode.name == "MULTIRUN" else job_dir
    local_epochs, budget = int(cfg.federated.local_epochs), int(cfg.sweep.budget)
    rounds = rounds_for(budget, local_epochs)
    overrides = [o for o in hc.overrides.task if not o.startswith(("results_dir=", "sweep.", "simulation."))]
    overrides.append(f"federated.num_rounds={rounds}")
    plain = OmegaConf.to_container(cfg, resolve=True)

    def preflight() -> None:
        check_federated(plain, job_dir / "results", device=True)
        check_engine(plain["simulation"].get("engine", "flwr"))

    report_user_errors(preflight)
    log.info("%s: L=%d, R=%d (budget %d)", cfg.method.name, local_epochs, rounds, budget)
    results = run_federated(plain, overrides, job_dir / "flower", job_dir / "results")
    rows = [{
        "method": results["method"], "weighting": weighting_label(results["config"]["federated"]),
        "local_epochs": local_epochs, "local_steps": int(results["config"]["federated"]["local_steps"]),
        "rounds": rounds, "budget": budget,
        "seed": results["seed"], "modality": m, "accuracy": v["accuracy"],
        "accuracy_before_calibration": v["accuracy_before_calibration"],
        "accuracy_after_calibration": v["accuracy_after_calibration"],
        "wall_seconds": results["wall_seconds"], "engine": results["config"]["simulation"]["engine"],
        "results": str(job_dir / "results" / "results.json"),
    } for m, v in results["modalities"].items()]
    append_rows(sweep_dir / "sweep.csv", rows)
    png = plot(sweep_dir / "sweep.csv")
    print(f"L={local_epochs} R={rounds}: " + ", ".join(f"{r['modality']} {r['accuracy']:.4f}" for r in rows)
          + f"; table {sweep_dir / 'sweep.csv'}, plot {png}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "collect":
        print(plot(Path(sys.argv[2]) / "sweep.csv"))
    else:
        main()
