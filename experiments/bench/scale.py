"""How many institutions one simulation holds: wall time and peak memory.

    python -m experiments.bench.scale --institutions 1000 [overrides...]

Runs `flwr run` with `num-supernodes=N` on a private SuperLink and samples, every 0.5 s,
the resident memory of every process of the runtime (SuperLink, ServerApp, Ray and its
actors, found by their FLWR_HOME). By default 2 rounds, 100 training and 50 test scenes per
class and modality (at N = 1,000: 2 training and 1 test scene per institution); later
overrides win.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import psutil

from experiments.bench.common import save, table
from fed_uml.federated.config import run_config_from_overrides
from localrun.flower import FlowerRuntime, find_strays


class PeakMemory(threading.Thread):
    def __init__(self, workdir: Path, interval: float = 0.5):
        super().__init__(daemon=True)
        self.workdir, self.interval, self.peak, self.peak_procs = workdir, interval, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            total, procs = 0, find_strays(self.workdir)
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--institutions", default="1000")
    ap.add_argument("--client-cpus", type=int, default=1)
    ap.add_argument("--client-gpus", type=float, default=0.0)
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.institutions.split(",")):
        # Defaults sized for 1,000 institutions: 2 rounds, 2 training and 1 test scene each.
        overrides = ["federated.evaluate_every=0", "federated.min_institutions=2", "federated.num_rounds=2",
                     "dataset.samples_per_class=100", "dataset.test_samples_per_class=50"] + list(args.overrides)
        with TemporaryDirectory(prefix="fed-uml-scale-") as tmp:
            tmp = Path(tmp)
            monitor = PeakMemory(tmp)
            with FlowerRuntime(tmp) as rt:
                rt.start_superlink(simulation=True)
                monitor.start()
                t0 = time.perf_counter()
                rt.run(run_config_from_overrides(overrides, **{"results-dir": str(tmp / "results")}),
                       {"num-supernodes": n, "client-resources-num-cpus": args.client_cpus,
                        "client-resources-num-gpus": args.client_gpus}, timeout=6 * 3600)
                wall = time.perf_counter() - t0
                monitor.stop()
            res = json.loads((tmp / "results" / "results.json").read_text())
        row = {
            "institutions": n,
            "answered": len(res["institutions"]),
            "rounds": res["rounds"],
            "wall_seconds": wall,
            "server_seconds": res["wall_seconds"],
            "mean_round_seconds": sum(h["seconds"] for h in res["history"]) / max(len(res["history"]), 1),
            "peak_memory_gib": monitor.peak / 2**30,
            "processes_at_peak": monitor.peak_procs,
            "failures": len(res["failures"]),
            "mean_accuracy": res["mean_accuracy"],
        }
        rows.append(row)
        print(table([row], list(row)), flush=True)
    save("scale", {"rows": rows, "overrides": args.overrides, "client_cpus": args.client_cpus,
                   "client_gpus": args.client_gpus}, args.out)


if __name__ == "__main__":
    main()
