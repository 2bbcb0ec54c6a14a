"""TLS and SuperNode authentication on real processes (Flower 1.42, all on 127.0.0.1).

A self-signed CA signs the SuperLink's certificate; the SuperLink serves every API over TLS
(no --insecure) and admits only SuperNodes whose public key was registered with
`flwr supernode register`. Two registered institutions (sar, rgb) train; a third SuperNode
with an unregistered key, and one with no key at all, are refused at connection time and
never become institutions. CLI connections that do not trust the CA, or that try plaintext,
are refused too.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fed_uml.federated.config import run_config_from_overrides
from localrun.certificates import make_ca, make_node_keys, make_tls
from localrun.flower import add_connection, find_strays
from tests.flower_helpers import TINY

pytestmark = pytest.mark.slow

OVERRIDES = TINY.split() + ["federated.num_rounds=1", "federated.evaluate_every=0", "federated.min_institutions=2"]


def _wait_exit(proc, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not proc.alive(), f"{proc.args} still runs after {timeout}s:\n{proc.log_text()[-2000:]}"
    return proc.popen.returncode


def _cli(rt, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["flwr", *args], env=rt.env(), cwd=rt.workdir, capture_output=True, text=True,
                          timeout=timeout)


def test_tls_with_supernode_authentication(flower_runtime, tmp_path):
    rt, certs = flower_runtime, tmp_path / "certs"
    tls = make_tls(certs, hosts=["127.0.0.1", "localhost"])
    keys = {name: make_node_keys(certs, name) for name in ("sar-0", "rgb-0", "intruder")}
    rt.start_superlink(certificates=(tls.ca_cert, tls.server_cert, tls.server_key), enable_supernode_auth=True)
    assert "--insecure" not in rt.processes[0].args and "--enable-supernode-auth" in rt.processes[0].args

    # The CLI reaches the SuperLink only over TLS with the right CA (the CLI calls run in
    # parallel: each one costs seconds of imports on a loaded 2-core machine).
    other_ca, _ = make_ca(tmp_path / "other-ca")
    add_connection(rt.flwr_home, "wrong-ca", f"127.0.0.1:{rt.superlink_port}", root_certificates=other_ca)
    add_connection(rt.flwr_home, "plaintext", f"127.0.0.1:{rt.superlink_port}", insecure=True)
    with ThreadPoolExecutor(4) as pool:
        refused = {conn: pool.submit(_cli, rt, "supernode", "ls", conn) for conn in ("wrong-ca", "plaintext")}
        registering = {name: pool.submit(rt.register_supernode, keys[name].public_key) for name in ("sar-0", "rgb-0")}
        # Refused SuperNodes: a key the SuperLink does not know, and no key at all.
        intruder = rt.start_supernode({"modality": "rgb", "partition-id": 0, "num-partitions": 1},
                                      "supernode-intruder", root_certificates=tls.ca_cert,
                                      auth_private_key=keys["intruder"].private_key)
        keyless = rt.start_supernode({"modality": "sar", "partition-id": 0, "num-partitions": 1},
                                     "supernode-keyless", root_certificates=tls.ca_cert)
        registered = {name: f.result() for name, f in registering.items()}
        for conn, f in refused.items():
            res = f.result()
            assert res.returncode != 0, f"{conn}: the TLS SuperLink answered\n{res.stdout}{res.stderr}"
    assert len(set(registered.values())) == 2
    for name in ("sar", "rgb"):
        rt.start_supernode({"modality": name, "partition-id": 0, "num-partitions": 1}, f"supernode-{name}-0",
                           root_certificates=tls.ca_cert, auth_private_key=keys[f"{name}-0"].private_key)

    # The refused SuperNodes give up (Flower exit code 305, "connection error") with the reason.
    assert _wait_exit(intruder) != 0
    assert "Failed to initialize the connection to the SuperLink" in intruder.log_text()
    assert "[code: 2004] Failed to activate SuperNode" in intruder.log_text()
    assert _wait_exit(keyless) != 0
    assert "All SuperNodes must be registered via the CLI" in keyless.log_text()
    superlink_log = rt.processes[0].log_text()
    assert "No SuperNode found with the given public key" in superlink_log

    listed = _cli(rt, "supernode", "ls", "superlink", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    nodes = json.loads(listed.stdout[listed.stdout.index("{"):])["nodes"]
    assert {int(n["node-id"]) for n in nodes} == set(registered.values()), nodes  # the refused ones left no trace

    results_dir = tmp_path / "results"
    rt.run(run_config_from_overrides(OVERRIDES, **{"results-dir": str(results_dir)}), timeout=600)
    results = json.loads((results_dir / "results.json").read_text())
    assert sorted(i["name"] for i in results["institutions"]) == ["rgb-0", "sar-0"]
    assert not results["failures"]
    assert set(results["modalities"]) == {"sar", "rgb"}
    for name in ("sar", "rgb"):
        log = (rt.workdir / f"supernode-{name}-0.log").read_text()
        assert f"SuperNode ID: {registered[f'{name}-0']}" in log

    rt.stop_all()
    assert not find_strays(tmp_path)
