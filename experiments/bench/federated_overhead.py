"""Simulation overhead: `flwr run` (Ray) against the same training compute in one process.

    python -m experiments.bench.federated_overhead --institutions 2,8,32,128 --rounds 2,6 [overrides...]

For each number of institutions N the same federated job runs three times: through Flower's
simulation runtime (a private SuperLink, `num-supernodes=N`); through the in-process engine
(`localrun.inprocess`: the same ServerApp and ClientApp, in this process, one client at a
time); and as a plain loop in this process (every institution trains L local epochs with the
same code, the backbones are averaged). Two round counts R1 < R2 separate the fixed cost
(start-up) from the per-round cost: per_round = (W(R2) - W(R1)) / (R2 - R1),
fixed = W(R1) - R1 * per_round. The engine's runs come after a first, untimed one, so its
fixed cost is that of a run in a sweep's process, where the imports are already done.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from experiments.bench.common import save, table
from experiments.cli import run_main
from fed_uml.federated.backbone import initial_backbone
from fed_uml.federated.config import compose_config, run_config_from_overrides
from fed_uml.federated.institution import Institution
from fed_uml.federated.roles import institution_layout
from localrun.flower import FlowerRuntime
from localrun.inprocess import run_inprocess


def in_process(cfg: dict, n: int, rounds: int) -> float:
    """The federated job's compute without Flower: seconds for all rounds and calibration."""
    return in_process_timed(cfg, n, rounds)["wall_s"]


def in_process_timed(cfg: dict, n: int, rounds: int) -> dict:
    """The same job in this process with the project's own `Institution` code, timed by stage.

    `fixed_s` (building every institution: settings, data share, initial state), `round_s` (each
    round's training and averaging), `calibration_s`, `wall_s`, and `first_round_unix` (when the
    first round started, for start-up measured from outside).
    """
    t0 = time.perf_counter()
    fed = cfg["federated"]
    insts = [Institution(cfg, ident) for ident in
             institution_layout(n, cfg["dataset"]["modalities"], fed["institutions_per_modality"])]
    backbone = initial_backbone(cfg)
    private = {i.ident.name: None for i in insts}
    fixed = time.perf_counter() - t0
    first_round_unix = time.time()
    round_s = []
    for r in range(1, rounds + 1):
        t_round = time.perf_counter()
        total, acc = 0, None
        for inst in insts:
            shared, private[inst.ident.name], m = inst.fit(backbone, private[inst.ident.name], r,
                                                           int(fed["local_epochs"]))
            w = m["num-examples"]
            total += w
            scaled = {k: v * w for k, v in shared.items()}
            acc = scaled if acc is None else {k: acc[k] + v for k, v in scaled.items()}
        backbone = {k: v / total for k, v in acc.items()}
        round_s.append(time.perf_counter() - t_round)
    t_cal = time.perf_counter()
    for inst in insts:
        inst.calibrate(backbone, private[inst.ident.name])
    end = time.perf_counter()
    return {"fixed_s": fixed, "round_s": round_s, "calibration_s": end - t_cal, "wall_s": end - t0,
            "first_round_unix": first_round_unix}


def with_flower(overrides: list[str], n: int, cpus: int, workdir: Path) -> tuple[float, dict]:
    """Wall seconds (and the results) of one run under `flwr run` with `n` simulated institutions."""
    with FlowerRuntime(workdir) as rt:
        rt.start_superlink(simulation=True)
        t0 = time.perf_counter()
        rt.run(run_config_from_overrides(overrides, **{"results-dir": str(workdir / "results")}),
               {"num-supernodes": n, "client-resources-num-cpus": cpus}, timeout=6 * 3600)
        wall = time.perf_counter() - t0
    return wall, json.loads((workdir / "results" / "results.json").read_text())


def with_engine(overrides: list[str], n: int, cpus: int, workdir: Path) -> float:
    """Wall seconds of the same run through the in-process engine."""
    t0 = time.perf_counter()
    run_inprocess(run_config_from_overrides(overrides, **{"results-dir": str(workdir / "results")}), n, cpus)
    return time.perf_counter() - t0


def fixed_and_per_round(r1: int, w1: float, r2: int, w2: float) -> tuple[float, float]:
    """(fixed seconds, seconds per round) from two runs of `r1` and `r2` rounds."""
    per_round = (w2 - w1) / (r2 - r1)
    return w1 - r1 * per_round, per_round


def main() -> None:
    """Run the federated-overhead benchmark from the command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--institutions", default="2,8,32,128")
    ap.add_argument("--rounds", default="2,6", help="two round counts R1,R2")
    ap.add_argument("--client-cpus", type=int, default=1)
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (data size, model, L, ...)")
    args = ap.parse_args()
    r1, r2 = (int(x) for x in args.rounds.split(","))
    rows = []
    with TemporaryDirectory(prefix="fed-uml-bench-") as tmp:  # the engine's imports, not timed
        with_engine(list(args.overrides) + ["federated.num_rounds=1"], 2, args.client_cpus, Path(tmp))
    for n in (int(x) for x in args.institutions.split(",")):
        walls = {}
        for r in (r1, r2):
            ov = list(args.overrides) + [f"federated.num_rounds={r}", "federated.evaluate_every=0",
                                         f"federated.min_institutions={min(n, 2)}"]
            cfg = compose_config(ov)
            torch.set_num_threads(args.client_cpus * 2 if n > 1 else args.client_cpus)
            walls[("local", r)] = in_process(cfg, n, r)
            with TemporaryDirectory(prefix="fed-uml-bench-") as tmp:
                walls[("flower", r)], res = with_flower(ov, n, args.client_cpus, Path(tmp))
            with TemporaryDirectory(prefix="fed-uml-bench-") as tmp:
                walls[("engine", r)] = with_engine(ov, n, args.client_cpus, Path(tmp))
            print(f"N={n} R={r}: flower {walls[('flower', r)]:.1f}s, engine {walls[('engine', r)]:.1f}s, "
                  f"one process {walls[('local', r)]:.1f}s", flush=True)
        f_fixed, f_round = fixed_and_per_round(r1, walls[("flower", r1)], r2, walls[("flower", r2)])
        e_fixed, e_round = fixed_and_per_round(r1, walls[("engine", r1)], r2, walls[("engine", r2)])
        l_fixed, l_round = fixed_and_per_round(r1, walls[("local", r1)], r2, walls[("local", r2)])
        rows.append({
            "institutions": n, "rounds": r2,
            "flower_seconds": walls[("flower", r2)], "engine_seconds": walls[("engine", r2)],
            "one_process_seconds": walls[("local", r2)],
            "ratio": walls[("flower", r2)] / walls[("local", r2)],
            "flower_fixed_s": f_fixed, "flower_per_round_s": f_round,
            "engine_fixed_s": e_fixed, "engine_per_round_s": e_round,
            "one_process_fixed_s": l_fixed, "one_process_per_round_s": l_round,
            "per_round_ratio": f_round / l_round if l_round > 0 else float("nan"),
        })
    cols = ["institutions", "rounds", "flower_seconds", "engine_seconds", "one_process_seconds", "ratio",
            "flower_fixed_s", "flower_per_round_s", "engine_fixed_s", "engine_per_round_s", "one_process_fixed_s",
            "one_process_per_round_s", "per_round_ratio"]
    print(table(rows, cols))
    path = save("federated_overhead", {"rows": rows, "overrides": args.overrides, "rounds": [r1, r2],
                                       "client_cpus": args.client_cpus}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
