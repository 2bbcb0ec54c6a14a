"""Outgrowing one machine: the simulation attaches to an existing Ray cluster.

A Ray head is started with `ray start --head` on 127.0.0.1; the SuperLink gets
`RAY_ADDRESS` in its environment (Ray's own convention), so the simulation runtime's
`ray.init()` joins that cluster instead of starting a private one. A multi-node cluster is
the same with worker nodes joined by `ray start --address=HEAD:PORT` (docs/how-to/ray-cluster.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile

import pytest

from fed_uml.federated.config import run_config_from_overrides
from localrun.flower import FlowerRuntime, find_strays, free_port, wait_for_port
from tests.flower_helpers import TINY

pytestmark = pytest.mark.slow


def test_simulation_runs_on_an_existing_ray_cluster(tmp_path):
    port = free_port()
    # `ray start` records its cluster in <temp dir>/ray_current_cluster, which every later bare
    # ray.init() on the machine would try to join: keep it in a temp dir of its own (short,
    # since Ray puts unix sockets under it)
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    with FlowerRuntime(tmp_path / "flower", env={"RAY_ADDRESS": f"127.0.0.1:{port}"}) as rt:
        rt.callback(shutil.rmtree, ray_tmp, True)
        head = rt.spawn(["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                         f"--temp-dir={ray_tmp}", "--num-cpus=2", "--include-dashboard=false",
                         "--disable-usage-stats"], "ray-head")
        wait_for_port(port, timeout=120, proc=head)
        rt.start_superlink(simulation=True)
        proc = rt.run(run_config_from_overrides(TINY.split() + ["federated.num_rounds=1", "federated.evaluate_every=0"],
                                                **{"results-dir": str(tmp_path / "results")}),
                      {"num-supernodes": 2, "client-resources-num-cpus": 1})
        results = json.loads((tmp_path / "results" / "results.json").read_text())
        assert sorted(i["name"] for i in results["institutions"]) == ["rgb-0", "sar-0"]
        # the cluster saw the simulation's driver: a job besides ours, by an flwr entry point
        probe = ("import json, ray; ray.init(logging_level='ERROR'); print(json.dumps("
                 "[j.get('Entrypoint', '') or j.get('EntryPoint', '') for j in ray._private.state.jobs()]))")
        jobs = subprocess.run([sys.executable, "-c", probe], env=rt.env(), capture_output=True, text=True, timeout=120)
        assert jobs.returncode == 0, jobs.stderr[-2000:]
        entrypoints = json.loads(jobs.stdout.strip().splitlines()[-1])
        assert any("flwr" in e or "flower" in e for e in entrypoints), (entrypoints, proc.stdout[-2000:])
        assert head.alive(), "the simulation must leave the shared cluster running"
    assert not find_strays(tmp_path)
