"""Driving the Flower 1.42 runtime from Python: a private SuperLink, SuperNodes and `flwr run`.

Used by the sweeps, the benchmarks, the loopback deployment script and the tests. Each
helper takes an explicit FLWR_HOME so that nothing touches the user's `~/.flwr`, binds
127.0.0.1 only, switches off runtime dependency installation and telemetry, and stops
every process it started (with its whole process group) on exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on localhost at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of Flower's processes: `FLWR_HOME`, no runtime installs, no telemetry."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        # A bare ray.init() joins whatever cluster /tmp/ray/ray_current_cluster names, even a
        # dead one left by an earlier `ray start`: start a private Ray unless told otherwise.
        "RAY_ADDRESS": os.environ.get("RAY_ADDRESS") or "local",
    })
    env.update(extra or {})
    return env


def toml_value(value) -> str:
    """`value` as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def write_toml_table(path: Path, values: Mapping) -> Path:
    """A flat TOML file (a Flower run config)."""
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
    return path


def add_connection(flwr_home: Path, name: str, address: str, insecure: bool = True,
                   root_certificates: Path | None = None) -> None:
    """Declare a SuperLink connection in `$FLWR_HOME/config.toml`."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    cfg = flwr_home / "config.toml"
    default = '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
    text = cfg.read_text() if cfg.exists() else default
    text += f'\n[superlink.{name}]\naddress = "{address}"\n'
    if root_certificates is not None:
        text += f'root-certificates = "{root_certificates}"\n'
    else:
        text += f"insecure = {toml_value(insecure)}\n"
    cfg.write_text(text)


class Process:
    """A child process in its own session, stopped with its whole process group."""

    def __init__(self, args: list[str], env: dict, log_path: Path, cwd: Path | None = None):
        self.args, self.log_path = args, log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.alive():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # children that outlived the leader still belong to its process group
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()

    def kill(self) -> None:
        """Abrupt failure: SIGKILL the whole group at once."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()

    def log_text(self) -> str:
        """The process's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for_port(port: int, timeout: float = 60.0, proc: Process | None = None, host: str = "127.0.0.1",
                  prefix: Sequence[str] = ()) -> None:
    """Wait until `host:port` accepts TCP connections.

    With a `prefix` (such as `ip netns exec NS`), the probe runs under it, e.g. inside a network
    namespace.
    """
    deadline = time.monotonic() + timeout
    probe = f"import socket,sys; s=socket.socket(); s.settimeout(2); sys.exit(s.connect_ex(({host!r}, {port})))"
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.args[0]} exited early:\n{proc.log_text()[-3000:]}")
        if prefix:
            if subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True).returncode == 0:
                return
        else:
            with socket.socket() as s:
                if s.connect_ex((host, port)) == 0:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class FlowerRuntime(ExitStack):
    """A throwaway Flower installation: its own FLWR_HOME, SuperLink(s) and SuperNodes.

    with FlowerRuntime(tmp) as rt:
        rt.start_superlink(simulation=True)
        rt.run(run_config={...}, federation_config={"num-supernodes": 4})
    """

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None):
        super().__init__()
        self.workdir = Path(workdir).resolve()  # processes run in it: relative paths would move
        self.flwr_home = self.workdir / "flwr-home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(env or {})
        self.processes: list[Process] = []
        self.superlink_port: int | None = None
        self.callback(self.stop_all)

    def env(self, flwr_home: Path | None = None) -> dict[str, str]:
        """The environment of the runtime's processes."""
        return flower_env(flwr_home or self.flwr_home, self.extra_env)

    def spawn(self, args: list[str], name: str, flwr_home: Path | None = None, prefix: Sequence[str] = ()) -> Process:
        """Start `args` (under `prefix`, e.g. `ip netns exec NS`, which execs it in place)."""
        proc = Process([*prefix, *args], self.env(flwr_home), self.workdir / f"{name}.log", cwd=self.workdir)
        self.processes.append(proc)
        return proc

    def start_superlink(self, simulation: bool = False, extra_args: list[str] = (),
                        name: str = "superlink", insecure: bool = True,
                        root_certificates: Path | None = None, *, host: str = "127.0.0.1",
                        port: int | None = None, certificates: Sequence[Path] | None = None,
                        enable_supernode_auth: bool = False, prefix: Sequence[str] = ()) -> Process:
        """Configure the runtime: TLS, SuperNode authentication and where the SuperLink listens.

        `certificates=(ca.crt, server.crt, server.key)` (see localrun/certificates.py) switches TLS
        on (`insecure` is then ignored; the CLI connection trusts the CA unless `root_certificates`
        says otherwise); `enable_supernode_auth` admits only SuperNodes whose public key was
        registered (`register_supernode`). `host`/`port`/`prefix` place the SuperLink elsewhere,
        e.g. in a network namespace (localrun/netns.py).
        """
        port = port or free_port()
        args = ["flower-superlink", "--host", host, "--port", str(port),
                "--disable-runtime-dependency-installation", "--database", str(self.workdir / f"{name}.db")]
        if certificates is not None:
            ca, cert, key = (Path(c) for c in certificates)
            args += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
            insecure, root_certificates = False, root_certificates or ca
        if insecure:
            args.append("--insecure")
        if enable_supernode_auth:
            args.append("--enable-supernode-auth")
        if simulation:
            args += ["--simulation", "--isolation", "subprocess"]
        proc = self.spawn(args + list(extra_args), name, prefix=prefix)
        wait_for_port(port, proc=proc, host=host, prefix=prefix)
        self.superlink_port = port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        add_connection(self.flwr_home, name, address, insecure=insecure,
                       root_certificates=root_certificates)
        return proc

    def start_supernode(self, node_config: Mapping, name: str, extra_args: list[str] = (),
                        insecure: bool = True, superlink: str | None = None, *,
                        root_certificates: Path | None = None, auth_private_key: Path | None = None,
                        prefix: Sequence[str] = ()) -> Process:
        """`root_certificates` (the CA) connects over TLS instead of `--insecure`.

        `auth_private_key` (OpenSSH EC key) authenticates the node to a SuperLink started with
        `enable_supernode_auth`; `prefix` as in `spawn`.
        """
        home = self.workdir / f"{name}-home"
        home.mkdir(exist_ok=True)
        node_cfg = " ".join(f"{k}={toml_value(v) if not isinstance(v, str) else repr(v)}"
                            for k, v in node_config.items())
        args = ["flower-supernode", "--superlink", superlink or f"127.0.0.1:{self.superlink_port}",
                "--port", str(free_port()), "--node-config", node_cfg]
        if root_certificates is not None:
            args += ["--root-certificates", str(root_certificates)]
        elif insecure:
            args.append("--insecure")
        if auth_private_key is not None:
            args += ["--auth-supernode-private-key", str(auth_private_key)]
        return self.spawn(args + list(extra_args), name, flwr_home=home, prefix=prefix)

    def register_supernode(self, public_key: Path, connection: str = "superlink", prefix: Sequence[str] = (),
                           timeout: float = 120) -> int:
        """`flwr supernode register PUBLIC_KEY CONNECTION`.

        Authorise a SuperNode's public key (OpenSSH `ecdsa-sha2-nistp384 ...`) on a SuperLink with
        SuperNode authentication. Returns the node id the SuperLink assigned.
        """
        import re

        args = [*prefix, "flwr", "supernode", "register", str(public_key), connection]
        proc = subprocess.run(args, env=self.env(), cwd=self.workdir, capture_output=True, text=True, timeout=timeout)
        found = re.search(r"SuperNode (\d+) registered", proc.stdout + proc.stderr)
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"flwr supernode register failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return int(found.group(1))

    def run(self, run_config: Mapping | None = None, federation_config: Mapping | None = None,
            connection: str = "superlink", app_dir: Path = REPO, timeout: float = 900,
            log_name: str = "flwr-run", prefix: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """`flwr run APP CONNECTION --stream` with a run-config TOML.

        Raises on failure. `prefix` (e.g. `ip netns exec NS`) runs the CLI elsewhere.
        """
        args = [*prefix, "flwr", "run", str(app_dir), connection, "--stream"]
        if run_config:
            toml = write_toml_table(self.workdir / f"{log_name}.toml", run_config)
            args += ["--run-config", str(toml)]
        if federation_config:
            args += ["--federation-config", " ".join(f"{k}={toml_value(v)}" for k, v in federation_config.items())]
        proc = subprocess.run(args, env=self.env(), cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout)
        (self.workdir / f"{log_name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"flwr run failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
        return proc

    def stop_all(self) -> None:
        """Stop every process started, newest first, and kill what they left behind."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        kill_strays(self.workdir)


def find_strays(workdir: Path) -> list:
    """Live processes started under a runtime in `workdir` (found by their FLWR_HOME)."""
    import psutil

    workdir, me, found = str(Path(workdir).resolve()), os.getpid(), []
    for p in psutil.process_iter(["pid", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if p.environ().get("FLWR_HOME", "").startswith(workdir):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def kill_strays(workdir: Path, passes: int = 20) -> int:
    """Kill processes left behind by a runtime under `workdir`, such as Ray's raylet and actors.

    Ray starts those in sessions of their own. Repeats until a pass finds none (a dying raylet may
    still start workers). Returns how many it killed.
    """
    import psutil

    killed = 0
    for _ in range(passes):
        strays = find_strays(workdir)
        if not strays:
            break
        for p in strays:
            try:
                p.kill()
                killed += 1
            except psutil.Error:
                pass
        psutil.wait_procs(strays, timeout=5)
    return killed
