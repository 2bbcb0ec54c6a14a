"""Several "hosts" on one Linux machine: network namespaces joined by a bridge.

Used by tests/test_multihost_netns.py to run the SuperLink, each SuperNode and the `flwr`
CLI as separate hosts with addresses of their own (10.77.0.1, 10.77.0.2, ...), so that no
process can reach another through 127.0.0.1. Needs root (or CAP_NET_ADMIN) and the `ip`
command (iproute2):

    with NetnsLab() as lab:
        link = lab.add_host("link")                  # 10.77.0.1
        node = lab.add_host("sar0")                  # 10.77.0.2
        rt.start_superlink(host=link.address, port=9092, prefix=link.prefix)
        rt.start_supernode(..., superlink=f"{link.address}:9092", prefix=node.prefix)

Layout: one namespace per host holding `eth0` (its address, /24) and `lo`, and a switch
namespace holding the bridge `br0` and the host ends `v1`, `v2`, ... of the veth pairs.
Nothing is added to the root namespace. Namespace names carry the creating PID
(`fuml<PID>-<host>`), so `remove_stale()` can delete those of a crashed run.
Processes are started inside a namespace with `ip netns exec NS CMD`, which execs CMD in
place (same PID), so stopping the process group works as for any other process; stop them
before `close()` (a namespace holding live processes outlives `ip netns del`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

PREFIX = "fuml"


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (no `ip` command, no permission, ...)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def list_namespaces() -> list[str]:
    """The network namespaces on the machine."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None if they can (tries one)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on this machine"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
        veth = _ip("link", "add", "name", "p0", "netns", probe, "type", "veth", "peer", "name", "p1", "netns", probe,
                   check=False)
        if veth.returncode != 0:
            return f"cannot create veth pairs: {veth.stderr.strip()}"
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge: {bridge.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", probe, check=False)


def remove_stale() -> list[str]:
    """Delete the namespaces of labs whose creating process is gone; returns their names."""
    removed = []
    for ns in list_namespaces():
        m = re.fullmatch(rf"{PREFIX}(\d+)-.+", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    return removed


@dataclass(frozen=True)
class Host:
    """A host of the lab: a network namespace with its address."""

    name: str
    namespace: str
    address: str

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command to run it on this host."""
        return ["ip", "netns", "exec", self.namespace]

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `cmd` inside the host's namespace."""
        return subprocess.run([*self.prefix, *cmd], capture_output=True, text=True, timeout=timeout)


class NetnsLab:
    """Hosts on one /24 behind a bridge; `close()` (or leaving the `with`) deletes everything."""

    def __init__(self, subnet: str = "10.77.0", tag: str | None = None):
        self.subnet = subnet
        self.tag = tag or f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []

    def __enter__(self) -> NetnsLab:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        remove_stale()
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_namespace(self, ns: str) -> None:
        if ns in list_namespaces():  # left by an earlier run of this very process
            _ip("netns", "del", ns)
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def add_host(self, name: str, index: int | None = None) -> Host:
        """A namespace with address <subnet>.<index> (default: 1, 2, ... in order of creation)."""
        index = index or len(self.hosts) + 1
        if not 1 <= index <= 254 or any(h.address.endswith(f".{index}") for h in self.hosts.values()):
            raise ValueError(f"host index {index} is taken or out of range")
        ns, port = f"{self.tag}-{name}", f"v{index}"
        try:
            self._add_namespace(ns)
            _ip("link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            address = f"{self.subnet}.{index}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        host = Host(name, ns, address)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Delete the namespaces the lab made."""
        for ns in reversed(self._namespaces):
            _ip("netns", "del", ns, check=False)
        self._namespaces.clear()
        self.hosts.clear()
