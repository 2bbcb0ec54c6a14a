"""Multi-host deployment on one machine: the SuperLink, each SuperNode and the `flwr` CLI in
network namespaces of their own (localrun/netns.py), joined by a bridge on 10.77.0.0/24.

Each "host" has its own address and its own loopback, so the SuperNodes and the CLI can only
reach the SuperLink over the network, as on separate machines. Skipped only where network
namespaces cannot be created (no `ip` command, no permission).
"""

from __future__ import annotations

import json
import re

import pytest

from fed_uml.federated.config import run_config_from_overrides
from localrun.flower import find_strays
from localrun.netns import NetnsLab, NetnsUnavailable, list_namespaces
from tests.flower_helpers import TINY

pytestmark = pytest.mark.slow

PORT = 9092
OVERRIDES = TINY.split() + ["federated.num_rounds=1", "federated.evaluate_every=0", "federated.min_institutions=2"]


@pytest.fixture
def lab():
    try:
        with NetnsLab() as lab:
            yield lab
    except NetnsUnavailable as e:
        pytest.skip(f"network namespaces are not available here: {e}")
    leftover = [ns for ns in list_namespaces() if ns.startswith(lab.tag + "-")]
    assert not leftover, f"namespaces outlived the test: {leftover}"


def test_superlink_supernodes_and_cli_on_separate_hosts(lab, flower_runtime, tmp_path):
    # `lab` comes before `flower_runtime`, so its teardown (deleting the namespaces) runs
    # after every process has been stopped.
    rt = flower_runtime
    link, sar, rgb, cli = (lab.add_host(n) for n in ("link", "sar0", "rgb0", "cli"))
    assert [h.address for h in (link, sar, rgb, cli)] == ["10.77.0.1", "10.77.0.2", "10.77.0.3", "10.77.0.4"]
    try:
        rt.start_superlink(host=link.address, port=PORT, prefix=link.prefix)
        assert f"{link.address}:{PORT}" in (rt.flwr_home / "config.toml").read_text()

        # Separate hosts: the SuperLink is reachable over the bridge, not through a node's loopback.
        probe = "import socket,sys; print(socket.socket().connect_ex((sys.argv[1], int(sys.argv[2]))))"
        for host in ("127.0.0.1", link.address):
            res = sar.run("python3", "-c", probe, host, str(PORT))
            assert res.returncode == 0, res.stderr
            assert (res.stdout.strip() == "0") == (host == link.address), (host, res.stdout)

        for host, modality in ((sar, "sar"), (rgb, "rgb")):
            rt.start_supernode({"modality": modality, "partition-id": 0, "num-partitions": 1},
                               f"supernode-{modality}-0", superlink=f"{link.address}:{PORT}", prefix=host.prefix)
        results_dir = tmp_path / "results"
        rt.run(run_config_from_overrides(OVERRIDES, **{"results-dir": str(results_dir)}), prefix=cli.prefix,
               timeout=600)

        results = json.loads((results_dir / "results.json").read_text())
        assert sorted(i["name"] for i in results["institutions"]) == ["rgb-0", "sar-0"]
        assert not results["failures"]
        # The SuperLink saw the nodes and the CLI arrive from their own addresses.
        access = rt.processes[0].log_text()
        activated = set(re.findall(r"(10\.77\.0\.\d+):\d+ - \"POST /v1/fleet/activate-node", access))
        assert activated == {sar.address, rgb.address}, activated
        assert re.search(rf"{re.escape(cli.address)}:\d+ - \"POST /v1/control/start-run", access)
        assert "127.0.0.1" not in " ".join(re.findall(r"\S+:\d+ - \"POST /v1/(?:fleet|control)/\S+", access))
    finally:
        rt.stop_all()
    assert not find_strays(tmp_path)
