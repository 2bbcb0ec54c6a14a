"""Data size x BN calibration (the study's Fig 10).

UML with and without calibration against the unimodal baseline, as the training set per class grows.

    python -m experiments.data_size --sizes 5,10,20,50,100 --seeds 0,1,2 --out results/data_size [overrides...]

Every (size, seed) trains UML once (its accuracy before and after calibration both come
from that run) and the unimodal baseline once, through `fed_uml.centralized.run_centralized`.
Rows go to `<out>/data_size.csv` as they finish (an interrupted sweep keeps them and is
resumed by running the same command: finished rows are skipped); `<out>/data_size.png`
plots mean accuracy per modality against samples per class; `<out>/data_size_paired.csv`
holds, per size and modality, the per-seed difference calibrated UML - unimodal with its 95%
t interval over seeds (printed at the end), against the stronger of the unimodal model as
trained and after Algorithm 1 at that size (`baseline_variant`; `experiments.stats`).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from experiments.cli import run_main
from experiments.grid import write_csv
from experiments.stats import Paired, paired_rows, stronger_baselines
from fed_uml.centralized import run_centralized
from fed_uml.federated.config import compose_config

FIELDS = ["dataset", "samples_per_class", "seed", "modality", "n_train", "uml_calibrated", "uml_uncalibrated",
          "unimodal", "unimodal_calibrated"]


def done_keys(path: Path) -> set[tuple[str, str]]:
    """The (size, seed) points already in the CSV at `path`, which a rerun skips."""
    if not path.exists():
        return set()
    with open(path) as f:
        return {(r["samples_per_class"], r["seed"]) for r in csv.DictReader(f)}


def run_point(overrides: list[str], size: int, seed: int, out: Path) -> list[dict]:
    """Train UML and the unimodal baseline at one size and seed; one CSV row per modality."""
    ov = list(overrides) + [f"dataset.samples_per_class={size}", f"seed={seed}", "training.log_every=0"]
    uml = run_centralized(compose_config(ov + ["method=uml"]), out / f"uml-{size}-{seed}")
    uni = run_centralized(compose_config(ov + ["method=unimodal"]), out / f"unimodal-{size}-{seed}")
    return [{
        "dataset": uml["dataset"], "samples_per_class": size, "seed": seed, "modality": k,
        "n_train": m["n_train"], "uml_calibrated": m["accuracy_after_calibration"],
        "uml_uncalibrated": m["accuracy_before_calibration"],
        "unimodal": uni["modalities"][k]["accuracy_before_calibration"],
        "unimodal_calibrated": uni["modalities"][k]["accuracy_after_calibration"],
    } for k, m in uml["modalities"].items()]


def paired(csv_path: Path) -> list[dict]:
    """Write data_size_paired.csv beside `csv_path`: calibrated UML - unimodal per size and modality.

    Against the stronger form of the unimodal model (a table without `unimodal_calibrated`, from
    before it was recorded, has only the model as trained).
    """
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    uml, uni, uni_cal = defaultdict(dict), defaultdict(dict), defaultdict(dict)
    for r in rows:
        key, seed = (int(r["samples_per_class"]), r["modality"]), int(r["seed"])
        uml[key][seed] = float(r["uml_calibrated"])
        uni[key][seed] = float(r["unimodal"])
        uni_cal[key][seed] = float(r.get("unimodal_calibrated") or r["unimodal"])
    baseline, variants = stronger_baselines(uni, uni_cal)
    out = paired_rows(uml, baseline, ("samples_per_class", "modality"), variants)
    write_csv(csv_path.with_name("data_size_paired.csv"), out)
    return out


def plot(csv_path: Path) -> Path:
    """Plot accuracy against samples per class from the CSV; returns the figure's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for col in ("uml_calibrated", "uml_uncalibrated", "unimodal", "unimodal_calibrated"):
            if r.get(col):
                acc[(r["modality"], col)][int(r["samples_per_class"])].append(float(r[col]))
    modalities = sorted({r["modality"] for r in rows})
    fig, axes = plt.subplots(1, len(modalities), figsize=(5 * len(modalities), 4), squeeze=False)
    styles = {"uml_calibrated": ("UML, calibrated", "-"), "uml_uncalibrated": ("UML, training BN stats", ":"),
              "unimodal": ("unimodal", "--"), "unimodal_calibrated": ("unimodal, calibrated", "-.")}
    for ax, modality in zip(axes[0], modalities):
        for col, (label, ls) in styles.items():
            pts = acc[(modality, col)]
            if not pts:
                continue
            xs = sorted(pts)
            ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], ls, marker="o", label=label)
        ax.set_xscale("log")
        sizes = sorted({x for col in styles for x in acc[(modality, col)]})
        ax.set_xticks(sizes, [str(x) for x in sizes])
        ax.minorticks_off()
        ax.set_title(modality)
        ax.set_xlabel("training samples per class")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = csv_path.with_suffix(".png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> None:
    """Run the data-size study from the command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="5,10,20,50,100")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="results/data_size")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=eurosat_ms")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "data_size.csv"
    done = done_keys(csv_path)
    for size in (int(s) for s in args.sizes.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            if (str(size), str(seed)) in done:
                continue
            rows = run_point(args.overrides, size, seed, out)
            new = not csv_path.exists()
            with open(csv_path, "a", newline="") as f:
                w = csv.DictWriter(f, FIELDS)
                if new:
                    w.writeheader()
                w.writerows(rows)
            print(" ".join(f"{r['modality']}: uml {r['uml_calibrated']:.3f} (uncal {r['uml_uncalibrated']:.3f}) "
                           f"unimodal {r['unimodal']:.3f}" for r in rows), f"[size {size}, seed {seed}]", flush=True)
    for r in paired(csv_path):
        d = Paired(r["diff"], r["ci_low"], r["ci_high"], r["n_seeds"])
        print(f"size {r['samples_per_class']:>4} {r['modality']}: UML - unimodal {d.text()} points")
    print(f"table {csv_path}, paired {csv_path.with_name('data_size_paired.csv')}, plot {plot(csv_path)}")


if __name__ == "__main__":
    run_main(main)
