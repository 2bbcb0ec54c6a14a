"""How many institutions one simulation holds, and what the runtime costs beside the work.

    python -m experiments.bench.scale [--institutions 100,1000] [--no-in-process] [--no-floor]
                                      [--main-job] [overrides...]

For every N: `flwr run` with `num-supernodes=N` on a private SuperLink, sampling every
0.5 s the resident memory of every runtime process (SuperLink, SuperExec, the simulation
process that holds the ServerApp and Ray's driver, Ray's own services, the ClientApp actors;
found by their FLWR_HOME); then, unless `--no-in-process`, the same rounds in one fresh Python
process with the project's own `Institution` code (`federated_overhead.in_process_timed`); then,
unless `--no-floor`, Flower's own floor: the same N and rounds through `flwr run` with a
numpy-only app that sends an ArrayRecord of the backbone's size and averages the replies
(`experiments/bench/minimal_app`), so that what Flower and Ray cost by themselves is told
from what the project adds; the floor runs twice, as Flower ships (`floor_*`) and with
fed-uml's delivery index (`floor_indexed_*`, `server/delivery_index.py`, which fed-uml's own
runs use unless `federated.delivery_index=false`). It prints and writes (`<out>/scale.json`) per N:

- per-round seconds of each (rounds 2..R: round 1 also carries the start-up, below) and their
  ratio (`per_round_ratio` = flwr / in-process);
- the start-up of each, from launching it to the first round's training, and its ratio
  (`fixed_cost_ratio` = flwr / in-process): until the server starts round 1 (`first_round_unix`,
  as each records it) plus what round 1 took beyond a later round (`*_round1_extra_s`: where
  institutions describe themselves in their first train reply, the actors start, import torch
  and build their institutions inside round 1). In-process, the launch of a fresh Python
  process: imports, settings, building every institution (`in_process_build_s`);
- calibration seconds, wall seconds, peak memory per kind of process and in all;
- the machine's speed at the start and the end (`speed_probe_ms`, `common.speed_probe`): on a
  shared machine only figures taken beside each other compare;
- with `--main-job`, the README's main job as a newcomer runs it (`flwr run . --stream
  --federation-config "num-supernodes=4"` with a fresh FLWR_HOME, so the CLI starts its local
  SuperLink): wall seconds and where they go (`main_job` in the JSON);
- with `--profile`, a py-spy sampling profile of every runtime process (`pip install
  py-spy`; attached to the SuperLink with its subprocesses): `<out>/scale-profile-<N>.txt`
  (collapsed stacks) and, in the JSON, the share of samples per kind of process and the
  functions where each kind spends its time (inclusive share of that kind's samples).

Defaults are sized for 1,000 institutions: 2 rounds, 100 training and 50 test scenes per
class and modality (2 training and 1 test scene per institution at N = 1,000); later
overrides win, e.g. `federated.fraction_train=0.01` for partial participation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory

import psutil
import torch

from experiments.bench.common import save, speed_probe, table
from experiments.bench.federated_overhead import in_process_timed
from experiments.cli import run_main
from fed_uml.federated import stages
from fed_uml.federated.config import compose_config, run_config_from_overrides
from localrun.flower import FlowerRuntime, find_strays

MINIMAL_APP = Path(__file__).resolve().parent / "minimal_app"
# The README's main job: `flwr run . --stream --federation-config "num-supernodes=4"` (tests/test_bench_scale.py)
MAIN_JOB_FEDERATION = {"num-supernodes": 4}
LOCAL_SUPERLINK_PORT = 39091  # where `flwr run` starts its local SuperLink (address ":local:")

DEFAULT_OVERRIDES = ["federated.evaluate_every=0", "federated.min_institutions=2", "federated.num_rounds=2",
                     "dataset.samples_per_class=100", "dataset.test_samples_per_class=50"]
# process kind by a piece of its command line, first match wins
KINDS = (("superlink", "flower-superlink"), ("superexec", "flower-superexec"),
         ("simulation (ServerApp + Ray driver)", "flwr-simulation"), ("clientapp actors", "ClientAppActor"),
         ("clientapp actors", "default_worker.py"),  # a Ray worker process hosts the actors
         ("ray services", "ray"), ("flwr cli", "flwr"))


def kind_of(cmdline: list[str]) -> str:
    """The kind of a process of the runtime (SuperLink, Ray actor, ...) told by its command line."""
    line = " ".join(cmdline)
    return next((kind for kind, piece in KINDS if piece in line), "other")


class PeakMemory(threading.Thread):
    """Peak resident memory of the runtime's processes, in all and per kind of process."""

    def __init__(self, workdir: Path, interval: float = 0.5):
        super().__init__(daemon=True)
        self.workdir, self.interval, self.peak, self.peak_procs = workdir, interval, 0, 0
        self.peak_by_kind: dict[str, int] = defaultdict(int)
        self._stop_event = threading.Event()

    def sample(self) -> None:
        """Add up the resident memory of every process of the runtime, by kind, and keep the peaks."""
        total, by_kind, procs = 0, defaultdict(int), find_strays(self.workdir)
        for p in procs:
            try:
                rss = p.memory_info().rss
                by_kind[kind_of(p.cmdline())] += rss
                total += rss
            except psutil.Error:
                pass
        if total > self.peak:
            self.peak, self.peak_procs = total, len(procs)
        for kind, rss in by_kind.items():
            self.peak_by_kind[kind] = max(self.peak_by_kind[kind], rss)

    def run(self) -> None:
        """Sample until `stop` is called."""
        while not self._stop_event.is_set():
            self.sample()
            time.sleep(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop_event.set()
        self.join()


_PROCESS = re.compile(r'^process \d+:"(.*)"$')


def summarize_profile(path: Path, top: int = 12) -> dict:
    """The share of samples of each process kind, and of each function within it, from py-spy's output.

    Returns {kind: {"share": samples of this kind / all, "functions": [(function, inclusive share of
    the kind's samples), ...]}} from py-spy's raw output (`process PID:"cmdline";frame;... count`).
    """
    samples: dict[str, int] = defaultdict(int)
    inclusive: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # with --subprocesses a stack starts with its chain of processes: the last one ran it
        chain = [m for m in map(_PROCESS.match, frames) if m]
        kind = kind_of(chain[-1].group(1).split()) if chain else "other"
        samples[kind] += int(count)
        for fn in {f.split(" (")[0] for f in frames if not _PROCESS.match(f)}:  # "function (file:line)" -> function
            inclusive[kind][fn] += int(count)
    total = sum(samples.values()) or 1
    return {kind: {"share": samples[kind] / total,
                   "functions": [(fn, c / samples[kind]) for fn, c in
                                 sorted(inclusive[kind].items(), key=lambda kv: -kv[1])[:top]]}
            for kind in sorted(samples, key=lambda k: -samples[k])}


def startup_and_round(launched_unix: float, first_round_unix: float, rounds: list[float]) -> dict[str, float]:
    """Start-up and steady per-round seconds of one run, measured alike for every runtime.

    `round_s`: the mean of rounds 2..R (all rounds if there is one). `startup_s`: from launch
    until the server starts round 1, plus `round1_extra_s`, what round 1 took beyond `round_s`:
    where work that precedes training falls inside round 1 (actors starting and importing,
    institutions describing themselves on first contact, first-call warm-up) it is start-up,
    not a round.
    """
    steady = rounds[1:] or rounds
    per_round = sum(steady) / max(len(steady), 1)
    extra = max(0.0, rounds[0] - per_round) if len(rounds) > 1 else 0.0
    return {"startup_s": first_round_unix - launched_unix + extra, "round_s": per_round, "round1_extra_s": extra}


def with_flower(overrides: list[str], n: int, cpus: int, gpus: float, profile: Path | None = None) -> dict:
    """Time a run of `n` institutions under `flwr run`, with its peak memory and per-stage timers."""
    with TemporaryDirectory(prefix="fed-uml-scale-") as tmp:
        tmp = Path(tmp)
        monitor = PeakMemory(tmp)
        stage_file = tmp / "stages.jsonl"  # per-stage timers of the ServerApp and every actor
        with FlowerRuntime(tmp, env={stages.ENV: str(stage_file)}) as rt:
            superlink = rt.start_superlink(simulation=True)
            spy = None
            if profile is not None:
                py_spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                      os.environ.get("PATH", "")]))
                if py_spy is None:
                    raise SystemExit("--profile needs py-spy: pip install py-spy")
                spy = subprocess.Popen([py_spy, "record", "--pid", str(superlink.popen.pid), "--subprocesses",
                                        "--format", "raw", "--rate", "20", "--nonblocking", "--output", str(profile)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            monitor.start()
            t0_unix, t0 = time.time(), time.perf_counter()
            rt.run(run_config_from_overrides(overrides, **{"results-dir": str(tmp / "results")}),
                   {"num-supernodes": n, "client-resources-num-cpus": cpus, "client-resources-num-gpus": gpus},
                   timeout=6 * 3600)
            wall = time.perf_counter() - t0
            monitor.stop()
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(timeout=120)
        res = json.loads((tmp / "results" / "results.json").read_text())
        stage_times = stages.summarise(stage_file) if stage_file.exists() else {}
    rounds = [h["seconds"] for h in res["history"]]
    timing = res.get("timing", {})
    phases = startup_and_round(t0_unix, timing.get("first_round_unix", float("nan")), rounds)
    out = {
        "answered": len(res["institutions"]),
        "rounds": res["rounds"],
        "participants_per_round": sum(h["participants"] for h in res["history"]) / max(len(rounds), 1),
        "flwr_wall_s": wall,
        "flwr_startup_s": phases["startup_s"],
        # of which: until the ServerApp runs (CLI, SuperLink run, simulation process, imports), describe,
        # and what round 1 took beyond a later round (actors starting, first contact)
        "flwr_to_serverapp_s": timing.get("server_start_unix", float("nan")) - t0_unix,
        "flwr_describe_s": timing.get("describe_seconds", float("nan")),
        "flwr_round1_extra_s": phases["round1_extra_s"],
        "flwr_round_s": phases["round_s"],
        "flwr_calibration_s": timing.get("calibration_seconds", float("nan")),
        "peak_memory_gib": monitor.peak / 2**30,
        "peak_memory_gib_by_process": {k: v / 2**30 for k, v in sorted(monitor.peak_by_kind.items())},
        "processes_at_peak": monitor.peak_procs,
        "failures": len(res["failures"]),
        "mean_accuracy": res.get("mean_accuracy", res.get("mean_map_macro")),  # multi-label: macro mAP
        # seconds per stage over the whole run, summed over processes (fed_uml.federated.stages)
        "stages": stage_times,
    }
    if profile is not None and profile.exists():
        out["profile"] = summarize_profile(profile)
    return out


def in_process_fresh(overrides: list[str], n: int, rounds: int, threads: int) -> dict:
    """The in-process loop in a fresh interpreter, so that its fixed cost counts what the `flwr run` side pays too.

    Starting Python, importing torch and the project, composing the settings and building every
    institution (rendering the data included). Its `startup_s` runs from launching the process to
    the first round, the counterpart of `flwr_startup_s`.
    """
    cmd = [sys.executable, "-m", "experiments.bench.scale", "--in-process-child", str(n), "--threads", str(threads),
           *overrides, f"federated.num_rounds={rounds}"]
    launched = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the in-process loop failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    local = json.loads(proc.stdout.strip().splitlines()[-1])
    local.update(startup_and_round(launched, local["first_round_unix"], local["round_s"]))
    return local


def backbone_elements(overrides: list[str]) -> int:
    """Number of elements of the backbone the configured run sends each institution."""
    from fed_uml.federated.backbone import initial_backbone

    return sum(t.numel() for t in initial_backbone(compose_config(overrides)).values())


def flower_floor(n: int, rounds: int, cpus: int, gpus: float, parameters: int = 910,
                 delivery_index: bool = False) -> dict:
    """Flower's own floor at N institutions.

    `experiments/bench/minimal_app` (numpy, an ArrayRecord of `parameters` float32 each way (`main`
    passes the backbone's size), no torch, no data) through the same `flwr run`, SuperLink and
    federation settings as fed-uml, timed the same way (`startup_and_round`). `delivery_index`: with
    fed-uml's index of undelivered messages (`server/delivery_index.py`), keys prefixed
    `floor_indexed_` instead of `floor_`.
    """
    with TemporaryDirectory(prefix="fed-uml-floor-") as tmp:
        tmp = Path(tmp)
        with FlowerRuntime(tmp) as rt:
            rt.start_superlink(simulation=True)
            launched, t0 = time.time(), time.perf_counter()
            rt.run({"num-server-rounds": rounds, "nodes": n, "parameters": parameters,
                    "results-file": str(tmp / "floor.json"), "delivery-index": delivery_index},
                   {"num-supernodes": n, "client-resources-num-cpus": cpus, "client-resources-num-gpus": gpus},
                   app_dir=MINIMAL_APP, timeout=6 * 3600, log_name="floor")
            wall = time.perf_counter() - t0
        res = json.loads((tmp / "floor.json").read_text())
    if delivery_index and not res["timing"].get("delivery_index"):
        raise RuntimeError("the floor app could not install the delivery index (another Flower version?)")
    phases = startup_and_round(launched, res["timing"]["first_round_unix"], [h["seconds"] for h in res["history"]])
    key = "floor_indexed" if delivery_index else "floor"
    return {f"{key}_wall_s": wall, f"{key}_startup_s": phases["startup_s"], f"{key}_round_s": phases["round_s"],
            f"{key}_round1_extra_s": phases["round1_extra_s"],
            f"{key}_to_serverapp_s": res["timing"]["server_start_unix"] - launched}


def main_job() -> dict:
    """The README's main job as a newcomer runs it.

    A fresh FLWR_HOME, so `flwr run` starts its local SuperLink; wall seconds from launching `flwr
    run` to its exit, and where they went.
    """
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", LOCAL_SUPERLINK_PORT)) == 0:
            raise SystemExit(f"--main-job: a local SuperLink already listens on 127.0.0.1:{LOCAL_SUPERLINK_PORT}; "
                             "`flwr run` would use it instead of starting its own: stop it first")
    with TemporaryDirectory(prefix="fed-uml-main-job-") as tmp:
        tmp = Path(tmp)
        with FlowerRuntime(tmp) as rt:
            launched, t0 = time.time(), time.perf_counter()
            rt.run({"results-dir": str(tmp / "results")}, MAIN_JOB_FEDERATION, connection="local",
                   log_name="main-job")
            wall = time.perf_counter() - t0
        res = json.loads((tmp / "results" / "results.json").read_text())
    timing, history = res["timing"], res["history"]
    phases = startup_and_round(launched, timing["first_round_unix"], [h["seconds"] for h in history])
    server_end = timing["server_start_unix"] + res["wall_seconds"]
    return {
        "wall_s": wall,
        "to_serverapp_s": timing["server_start_unix"] - launched,
        "startup_s": phases["startup_s"],
        "round_s": phases["round_s"],
        "rounds_s": sum(h["seconds"] for h in history),
        "rounds": len(history),
        "evaluations": sum(1 for h in history if any(k.endswith("/test_accuracy") for k in h)),
        "calibration_s": timing["calibration_seconds"],
        "after_server_s": launched + wall - server_end,  # the simulation, Ray and the CLI's log stream ending
        "accuracy": {m: r["accuracy"] for m, r in res["modalities"].items()},
    }


def _child(n: int, threads: int, overrides: list[str]) -> None:
    torch.set_num_threads(threads)
    cfg = compose_config(overrides)
    print(json.dumps(in_process_timed(cfg, n, int(cfg["federated"]["num_rounds"]))))


def main() -> None:
    """Run the scale benchmark from the command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--institutions", default="100,1000")
    ap.add_argument("--client-cpus", type=int, default=1)
    ap.add_argument("--client-gpus", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the in-process loop (the machine's cores)")
    ap.add_argument("--no-in-process", action="store_true", help="only flwr run (e.g. for 10,000 institutions)")
    ap.add_argument("--no-floor", action="store_true", help="without Flower's floor (the numpy-only minimal app)")
    ap.add_argument("--main-job", action="store_true", help="also time the README's main job")
    ap.add_argument("--profile", action="store_true", help="py-spy profile of every runtime process")
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--in-process-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.in_process_child:
        return _child(args.in_process_child, args.threads, list(args.overrides))
    probe_start = speed_probe()
    print(f"speed probe: {probe_start:.1f} ms per small-CNN training step", flush=True)
    rows = []
    for n in (int(x) for x in args.institutions.split(",") if x.strip()):
        overrides = DEFAULT_OVERRIDES + list(args.overrides)
        profile = Path(args.out) / f"scale-profile-{n}.txt" if args.profile else None
        if profile is not None:
            profile.parent.mkdir(parents=True, exist_ok=True)
        row = {"institutions": n, **with_flower(overrides, n, args.client_cpus, args.client_gpus, profile)}
        if not args.no_in_process:
            local = in_process_fresh(overrides, n, int(row["rounds"]), args.threads)
            row.update({
                "in_process_wall_s": local["wall_s"], "in_process_startup_s": local["startup_s"],
                "in_process_build_s": local["fixed_s"], "in_process_round1_extra_s": local["round1_extra_s"],
                "in_process_round_s": local["round_s"], "in_process_calibration_s": local["calibration_s"],
                "per_round_ratio": row["flwr_round_s"] / local["round_s"],
                "fixed_cost_ratio": row["flwr_startup_s"] / local["startup_s"],
            })
        if not args.no_floor:
            for indexed in (False, True):  # Flower as shipped, and with fed-uml's delivery index
                row.update(flower_floor(n, int(row["rounds"]), args.client_cpus, args.client_gpus,
                                        parameters=backbone_elements(overrides), delivery_index=indexed))
            if "in_process_startup_s" in row:
                row["floor_fixed_cost_ratio"] = row["floor_startup_s"] / row["in_process_startup_s"]
        rows.append(row)
        shown = {k: v for k, v in row.items() if k not in ("peak_memory_gib_by_process", "profile", "stages")}
        print(table([shown], list(shown)), flush=True)
        print("  stages (s over the run, all processes): " + ", ".join(
            f"{k} {v['seconds']:.1f} ({v['ms_per_call']:.1f} ms x {v['calls']})" for k, v in row["stages"].items()),
            flush=True)
        print("  peak memory by process (GiB): " + ", ".join(
            f"{k} {v:.2f}" for k, v in row["peak_memory_gib_by_process"].items()), flush=True)
        for kind, p in row.get("profile", {}).items():
            print(f"  profile {kind}: {100 * p['share']:.0f}% of samples; " + ", ".join(
                f"{fn} {100 * s:.0f}%" for fn, s in p["functions"][:6]), flush=True)
    job = None
    if args.main_job:
        job = main_job()
        print("main job (README): " + ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in job.items()), flush=True)
    probe_end = speed_probe()
    print(f"speed probe: {probe_end:.1f} ms per small-CNN training step (at the start {probe_start:.1f})", flush=True)
    path = save("scale", {"rows": rows, "main_job": job, "overrides": args.overrides, "client_cpus": args.client_cpus,
                          "client_gpus": args.client_gpus, "speed_probe_ms": [probe_start, probe_end]}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
