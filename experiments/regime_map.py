r"""Where UML helps: the paired gain over the fair unimodal baseline across data regimes.

The weak modality (`sar`) has `--weak` training scenes per class, the strong optical one
(`rgb` or the 13-band `ms`) `--strong` (a number, or `equal` for the weak modality's count).
Every cell runs UML and the unimodal baseline with the same seeds (the baseline takes the
optimiser steps its modality gets inside UML, `method.budget=matched`) and reports, per
modality, the per-seed difference UML - unimodal with its 95% t interval, against the stronger
of the unimodal baseline as trained and after Algorithm 1 in that cell (`baseline_variant`,
`experiments.stats.stronger_baseline`).

`--federated 5:50` adds federated cells (`flwr run`, simulation, `simulation.*` settings) for
those weak:strong sizes, with `federated.weighting=examples`, `=modality` and `=mixed`
(`federated.weighting_mix`, 0.5 unless set) for UML against the federated unimodal baseline.

Writes `runs/...` (one results.json per run; finished runs are skipped on a rerun),
`regime_map_runs.csv`, `regime_map.csv` (one row per cell and modality) and
`regime_map.png` (heat maps of the paired gain, cells whose CI excludes 0 marked *).

    python -m experiments.regime_map --pairs sar-rgb,sar-ms --weak 2,5,10,20,40 --strong equal,50,200 \
        --seeds 0,1,2,3,4 --federated 5:50 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from experiments.cli import run_main
from experiments.grid import Job, finish, ints, names, run_jobs, write_csv
from experiments.stats import CALIBRATED, mean_std, paired_difference, stronger_baseline
from fed_uml.results import read_results

log = logging.getLogger(__name__)

PAIRS = {"sar-rgb": ("sar", "rgb"), "sar-ms": ("sar", "ms")}
METHODS = ("uml", "unimodal")
FED_WEIGHTINGS = ("examples", "modality", "mixed")


def strong_size(strong: str, weak: int) -> int:
    """Scenes per class of the strong modality: `weak` for "equal", else the number given."""
    return weak if strong == "equal" else int(strong)


def cell_overrides(pair: str, weak: int, strong: str) -> list[str]:
    """Overrides of one cell of the map: the pair's two modalities at their sizes."""
    w, s = PAIRS[pair]
    return ["dataset=synthetic", f"dataset.modalities=[{w},{s}]",
            f"dataset.samples_per_class={{{w}:{weak},{s}:{strong_size(strong, weak)}}}"]


def centralized_jobs(root: Path, pairs, weaks, strongs, seeds, extra) -> dict:
    """The centralized jobs of the map, one per (pair, weak, strong, method, seed)."""
    return {
        (pair, weak, strong, "centralized", method, seed): Job(
            (*cell_overrides(pair, weak, strong), f"method={method}", f"seed={seed}", *extra),
            root / "runs" / pair / f"weak{weak}_strong{strong}" / method / f"seed{seed}")
        for pair in pairs for weak in weaks for strong in strongs for method in METHODS for seed in seeds
    }


def run_federated_cells(root: Path, pairs, cells, seeds, extra) -> dict:
    """Federated runs (one after another: each simulation uses the whole machine)."""
    from experiments.sweep import run_federated
    from fed_uml.federated.config import compose_config

    dirs = {}
    for pair in pairs:
        for weak, strong in cells:
            for seed in seeds:
                arms = [("uml", w) for w in FED_WEIGHTINGS] + [("unimodal", "examples")]
                for method, weighting in arms:
                    label = f"federated-{weighting}" if method == "uml" else "federated"
                    # absolute: flwr resolves FLWR_HOME and the results directory from its own processes
                    out = (root / "runs" / pair / f"weak{weak}_strong{strong}" / f"{method}-{label}" / f"seed{seed}"
                           ).resolve()
                    overrides = [*cell_overrides(pair, weak, strong), f"method={method}", f"seed={seed}",
                                 f"federated.weighting={weighting}", *extra]
                    dirs[(pair, weak, strong, label, method, seed)] = out
                    if (out / "results.json").exists():
                        continue
                    log.info("federated %s %s weak %d strong %s seed %d -> %s", pair, method, weak, strong, seed, out)
                    out.mkdir(parents=True, exist_ok=True)
                    try:
                        run_federated(compose_config(overrides), overrides, out / "flower", out)
                    except Exception as exc:  # noqa: BLE001  (the grid goes on)
                        log.error("federated run %s failed: %r", out, exc)
    return dirs


def summarise(dirs: dict, root: Path) -> list[dict]:
    """(pair, weak, strong, setting, method, seed) -> run dir  ==>  regime_map_runs.csv, regime_map.csv."""
    acc: dict[tuple, dict[int, float]] = {}
    forms: dict[tuple, dict[str, dict[int, float]]] = {}  # the baseline's two forms per cell
    runs = []
    for (pair, weak, strong, setting, method, seed), out in dirs.items():
        path = Path(out) / "results.json"
        if not path.exists():
            continue
        for k, m in read_results(path)["modalities"].items():
            acc.setdefault((pair, weak, strong, setting, method, k), {})[seed] = m["accuracy"]
            cell = forms.setdefault((pair, weak, strong, setting, method, k), {"before": {}, "after": {}})
            cell["before"][seed] = m["accuracy_before_calibration"]
            cell["after"][seed] = m["accuracy_after_calibration"]
            runs.append({"pair": pair, "weak": weak, "strong": strong, "setting": setting, "method": method,
                         "seed": seed, "modality": k, "accuracy": m["accuracy"],
                         "accuracy_before_calibration": m["accuracy_before_calibration"],
                         "accuracy_after_calibration": m["accuracy_after_calibration"]})
    write_csv(root / "regime_map_runs.csv", runs)
    rows = []
    for (pair, weak, strong, setting, method, k), uml in sorted(acc.items(), key=str):
        if method != "uml":
            continue
        base_setting = "federated" if setting.startswith("federated") else setting
        base_forms = forms.get((pair, weak, strong, base_setting, "unimodal", k), {"before": {}, "after": {}})
        base, variant = stronger_baseline(base_forms["before"], base_forms["after"])
        d = paired_difference(uml, base)
        um, us = mean_std(list(uml.values()))
        bm, bs = mean_std([base[s] for s in sorted(set(uml) & set(base))])
        rows.append({"pair": pair, "weak": weak, "strong": strong, "setting": setting, "modality": k,
                     "role": "weak" if k == PAIRS[pair][0] else "strong", "n_seeds": d.n,
                     "uml_mean": um, "uml_std": us, "unimodal_mean": bm, "unimodal_std": bs,
                     "baseline_variant": variant,
                     "gain": d.mean, "ci_low": d.low, "ci_high": d.high, "ci_excludes_zero": d.excludes_zero})
    write_csv(root / "regime_map.csv", rows)
    return rows


def plot(rows: list[dict], path: Path) -> Path | None:
    """One heat map per pair and role (weak / strong modality).

    Rows = weak size, columns = strong size (centralized, then federated settings); colour = paired
    gain in points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not rows:
        return None
    pairs = sorted({r["pair"] for r in rows})
    weaks = sorted({int(r["weak"]) for r in rows})

    def col_key(r):
        return (r["setting"] != "centralized", r["strong"] != "equal",
                int(r["strong"]) if r["strong"] != "equal" else 0, r["setting"])

    cols = sorted({col_key(r) for r in rows})
    labels = [f"{'=' if c[1] is False else c[2]}" + ("" if c[3] == "centralized" else f"\n{c[3]}") for c in cols]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(4 + 1.1 * len(cols) * 2, 1.2 + 0.7 * len(weaks) * len(pairs)),
                             squeeze=False)
    lim = max(1.0, max(abs(100 * r["gain"]) for r in rows if math.isfinite(r["gain"])))
    for i, pair in enumerate(pairs):
        for j, role in enumerate(("weak", "strong")):
            ax = axes[i][j]
            grid = np.full((len(weaks), len(cols)), np.nan)
            marks = {}
            name = PAIRS[pair][0 if role == "weak" else 1]
            for r in rows:
                if r["pair"] != pair or r["role"] != role:
                    continue
                a, b = weaks.index(int(r["weak"])), cols.index(col_key(r))
                grid[a, b] = 100 * r["gain"]
                few = "" if r["n_seeds"] >= 5 else f"\nn={r['n_seeds']}"
                marks[(a, b)] = ("*" if r["ci_excludes_zero"] else "") + few
            im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            for (a, b), mark in marks.items():
                ax.text(b, a, f"{grid[a, b]:+.1f}{mark}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(cols)), labels, fontsize=7)
            ax.set_yticks(range(len(weaks)), [str(w) for w in weaks])
            ax.set_xlabel(f"{PAIRS[pair][1]} scenes per class (= : as many as {PAIRS[pair][0]})", fontsize=8)
            ax.set_ylabel(f"{PAIRS[pair][0]} scenes per class", fontsize=8)
            ax.set_title(f"{pair}: gain on {name} ({role}), UML − unimodal, points", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("paired gain over the fair unimodal baseline, the stronger of as trained and calibrated "
                 "(* : 95% CI excludes 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def to_markdown(rows: list[dict]) -> str:
    """The regime map as a Markdown table: one line per cell and modality."""
    from experiments.stats import Paired

    lines = ["| pair | weak / strong per class | setting | modality | UML % | unimodal %"
             " (ᶜ: after Algorithm 1) | gain, 95% CI | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["pair"], int(r["weak"]), r["strong"] != "equal", r["strong"],
                                         r["setting"], r["role"])):
        gain = Paired(r["gain"], r["ci_low"], r["ci_high"], r["n_seeds"])
        lines.append(f"| {r['pair']} | {r['weak']} / {r['strong']} | {r['setting']} | {r['modality']} ({r['role']}) "
                     f"| {100 * r['uml_mean']:.2f} ± {100 * r['uml_std']:.2f} "
                     f"| {100 * r['unimodal_mean']:.2f}{'ᶜ' if r['baseline_variant'] == CALIBRATED else ''}"
                     f" ± {100 * r['unimodal_std']:.2f} "
                     f"| {gain.text()}{' *' if r['ci_excludes_zero'] else ''} | {r['n_seeds']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the regime map from the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default="sar-rgb,sar-ms", help=f"comma-separated of {list(PAIRS)}")
    p.add_argument("--weak", default="2,5,10,20,40", help="weak-modality (sar) scenes per class")
    p.add_argument("--strong", default="equal,50,200", help="strong-modality scenes per class, or 'equal'")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--federated", default="", help="weak:strong cells to run federated too, e.g. 5:50 ('' none)")
    p.add_argument("--federated-seeds", default=None, help="seeds of the federated cells (default: --seeds)")
    p.add_argument("--no-centralized", action="store_true", help="only the federated cells (and the summary)")
    p.add_argument("--out", default="results/regime_map")
    p.add_argument("--workers", type=int, default=1, help="centralized runs in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per centralized run")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    pairs = names(args.pairs)
    if unknown := sorted(set(pairs) - set(PAIRS)):
        p.error(f"--pairs: unknown {unknown}; known: {list(PAIRS)}")
    strongs = names(args.strong)
    for s in strongs:
        if s != "equal" and not s.isdigit():
            p.error(f"--strong: {s!r} is neither a number nor 'equal'")
    seeds = ints(args.seeds)
    root = Path(args.out)
    jobs = centralized_jobs(root, pairs, ints(args.weak), strongs, seeds, args.overrides)
    failures = [] if args.no_centralized else run_jobs(list(jobs.values()), args.workers, args.threads)
    dirs = {k: j.out for k, j in jobs.items()}
    if args.federated:
        cells = [(int(c.split(":")[0]), c.split(":")[1]) for c in args.federated.split(",")]
        fseeds = ints(args.federated_seeds) if args.federated_seeds else seeds
        dirs.update(run_federated_cells(root, pairs, cells, fseeds, args.overrides))
    rows = summarise(dirs, root)
    png = plot(rows, root / "regime_map.png")
    return finish(to_markdown(rows), f"wrote {root / 'regime_map.csv'} and {png}", failures)


if __name__ == "__main__":
    run_main(main)
