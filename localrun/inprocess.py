"""An in-process engine for sweeps.

The project's ServerApp and ClientApp, with Flower's message API between them, in this one process
(no SuperLink, no Ray, no `flwr run`).

Why: on this machine `flwr run` costs a fixed start-up per run (the CLI, a SuperLink, the
ServerApp process, `ray.init`, the actors and their torch import), which a sweep of many short
runs pays every time. This engine keeps everything that decides what a run computes and drops
only the transport:

- the ServerApp is the one `flwr run` loads (`[tool.flwr.app.components]` in pyproject.toml,
  `server.server_app:app`), called with a `Grid` and a `Context` as the simulation calls it:
  the same round driver (`server.rounds.FederatedRun`), sampling, weighting and averaging;
- the ClientApp is the one `flwr run` loads (`clients.client_app:app`, its mods included),
  called with each message and the destination node's `Context` as a Ray actor calls it;
- `InProcessGrid` implements Flower 1.42's `flwr.serverapp.Grid` as the simulation's
  `InMemoryGrid` + `vce_api` do: a pushed message gets an id and is checked with Flower's own
  validator, is delivered (a copy, as Ray delivers one) to the ClientApp with that node's
  Context, and its reply (an error reply if the ClientApp raised) waits to be pulled;
- each node's Context is the simulation's: node_config `partition-id` / `num-partitions`,
  a `state` that persists across the run's messages, and the run config fused from
  pyproject's `[tool.flwr.app.config]` and the overrides (`get_fused_config_from_dir`, as the
  simulation does);
- torch uses as many threads while the apps run as a Ray actor started with
  `client-resources-num-cpus` has (`client_threads`: Ray sets an actor's OMP_NUM_THREADS to
  its CPUs unless the environment sets it); a run-config `num-threads` still wins, as it
  does in an actor.

What differs from `flwr run`: messages are handled one at a time, in the order pushed (the
simulation runs one per Ray actor at once), and no timeout can fire (a message is answered
before `push_messages` returns). Node ids are drawn like the simulation's but from a generator
seeded by the run's seed, so two engine runs of the same settings are identical bit for bit.
`flwr run` stays the engine of record (README, docs/results.md); the equivalence of the two is
tested in tests/test_inprocess.py.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import random
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir, get_project_config
from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY, SUPERLINK_NODE_ID, ErrorCode
from flwr.server.utils.validator import validate_message
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.date import now
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fed_uml.errors import SettingsError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("flwr", "inprocess")  # how experiment scripts run a federated job; flwr is the default


def check_engine(name: str) -> str:
    """`simulation.engine`, checked before any work."""
    if name not in ENGINES:
        raise SettingsError(f"simulation.engine={name!r} is not an engine; choose one of {list(ENGINES)}")
    return name


class InProcessGrid(Grid):
    """Flower's Grid over ClientApp nodes that live in this process.

    `push_messages` delivers each valid message to the ClientApp at once, with its node's
    Context; `pull_messages` hands back the replies of the ids asked for (each once).
    """

    def __init__(self, client_app: ClientApp, run: Run, contexts: Mapping[int, Context]):
        self.client_app = client_app
        self._run = run
        self.contexts = dict(contexts)
        self._replies: dict[str, Message] = {}

    # -- run -----------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        """Set the run this Grid belongs to."""
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        self._run = run

    @property
    def run(self) -> Run:
        """A copy of the run."""
        return Run(**vars(self._run))

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        """A message to node `dst_node_id`."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The node ids of the simulated institutions."""
        return list(self.contexts)

    # -- messages --------------------------------------------------------------------------------
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Ids of the messages accepted (a message the SuperLink would refuse gets none)."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as InMemoryGrid does
            errors = validate_message(msg, is_reply_message=False)
            if msg.metadata.run_id != self._run.run_id:
                errors.append(f"run id {msg.metadata.run_id} is not this run's")
            if msg.metadata.dst_node_id not in self.contexts:
                errors.append(f"no node {msg.metadata.dst_node_id}")
            if errors:
                log.error("message refused: %s", "; ".join(errors))
                continue
            self._replies[msg.metadata.message_id] = self._deliver(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def _deliver(self, msg: Message) -> Message:
        """The ClientApp's reply to `msg`, as the simulation's worker makes it.

        The node gets its own copy of the message (Ray pickles it to the actor), a ClientApp
        exception becomes an error reply, and the reply gets its id.
        """
        delivered = copy.deepcopy(msg)
        delivered.metadata.delivered_at = now().isoformat()
        context = self.contexts[msg.metadata.dst_node_id]
        try:
            reply = self.client_app(message=delivered, context=context)
        except Exception as ex:  # noqa: BLE001  (reported to the server as the simulation does)
            log.error("ClientApp of node %d raised:\n%s", msg.metadata.dst_node_id, traceback.format_exc())
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(ex)}:<'{ex}'>"),
                            reply_to=delivered)
        reply = copy.deepcopy(reply)  # nothing of the node's objects reaches the server
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return reply

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to `message_ids` that have arrived."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Deliver `messages` and return their replies."""
        return self.pull_messages(self.push_messages(messages))


def _load(reference: str):
    """`module:attribute`, as `[tool.flwr.app.components]` names the apps."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def load_apps(app_dir: Path = REPO) -> tuple[ServerApp, ClientApp]:
    """The ServerApp and ClientApp that `flwr run APP_DIR` would load.

    The components its pyproject.toml names, imported by module name (a clone's, as `flwr run` needs
    one too).
    """
    components = get_project_config(app_dir)["tool"]["flwr"]["app"]["components"]
    return _load(components["serverapp"]), _load(components["clientapp"])


@contextmanager
def task_identity(run: Run) -> Iterator[None]:
    """The identity the simulation gives the ServerApp's process.

    Instruction messages take their run id and source node from it.
    """
    before = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = before


@contextmanager
def _hydra_set_aside() -> Iterator[None]:
    """Set the running Hydra app's state aside while the apps run, and put it back after.

    The apps compose their settings with Hydra's compose API, which refuses to start inside a
    running Hydra app (a sweep's job; under `flwr run` the apps have processes of their own): the
    running app's Hydra state is set aside while the apps run and put back after, as Hydra's own
    `initialize` does with it.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


@contextmanager
def _flower_log_once() -> Iterator[None]:
    """Flower's logger prints through its own handler, as under `flwr run`.

    A script that also configured the root logger would print every line twice.
    """
    from flwr.common.logger import FLOWER_LOGGER

    before, FLOWER_LOGGER.propagate = FLOWER_LOGGER.propagate, False
    try:
        yield
    finally:
        FLOWER_LOGGER.propagate = before


def client_threads(num_cpus: float) -> int:
    """The torch threads of a Ray actor given `num_cpus` CPUs.

    OMP_NUM_THREADS if the environment sets it, else the actor's whole CPUs, at least 1
    (`ray._private.utils.set_omp_num_threads_if_unset`).
    """
    import math
    import os

    return int(os.environ.get("OMP_NUM_THREADS") or max(math.floor(num_cpus), 1))


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def node_contexts(run: Run, num_supernodes: int, run_config: Mapping, seed: int) -> dict[int, Context]:
    """One Context per simulated SuperNode, as `vce_api` registers them.

    node_config `partition-id` / `num-partitions`, an empty state, the fused run config. Node ids
    are random 64-bit ids like the simulation's, drawn from `seed`.
    """
    rng = random.Random(seed)
    ids: list[int] = []
    while len(ids) < num_supernodes:
        node_id = rng.getrandbits(63)
        if node_id not in (0, SUPERLINK_NODE_ID, *ids):
            ids.append(node_id)
    return {node_id: Context(run_id=run.run_id, node_id=node_id,
                             node_config={PARTITION_ID_KEY: p, NUM_PARTITIONS_KEY: num_supernodes},
                             state=RecordDict(), run_config=dict(run_config))
            for p, node_id in enumerate(ids)}


def run_inprocess(run_config: Mapping, num_supernodes: int, num_cpus: int = 1, app_dir: Path = REPO) -> dict:
    """One federated run with the project's apps in this process; returns its results.json.

    `run_config`: the overrides `flwr run --run-config` would take (it must set `results-dir`,
    where the ServerApp writes); `num_supernodes` and `num_cpus` as `--federation-config
    "num-supernodes=N client-resources-num-cpus=C"`.
    """
    if not run_config.get("results-dir"):
        raise SettingsError("the in-process engine needs run-config 'results-dir' (where the ServerApp writes "
                            "results.json)")
    if num_supernodes < 1 or num_cpus < 1:
        raise SettingsError(f"num-supernodes={num_supernodes} and client CPUs={num_cpus} must be >= 1")
    try:
        fused = get_fused_config_from_dir(app_dir, dict(run_config))  # as the simulation fuses it
    except ValueError as e:  # a key pyproject's [tool.flwr.app.config] lacks, refused as `flwr run` refuses it
        raise SettingsError(f"run config: {e}") from None
    server_app, client_app = load_apps(app_dir)
    from fed_uml.federated.config import config_from_run_config

    t0 = time.perf_counter()
    with _hydra_set_aside():
        seed = int(config_from_run_config(fused)["seed"])
        run = Run.create_empty(random.Random(f"run-{seed}").getrandbits(63))
        run.override_config = dict(run_config)
        grid = InProcessGrid(client_app, run, node_contexts(run, num_supernodes, fused, seed))
        server_context = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(),
                                 run_config=dict(fused))
        with task_identity(run), _torch_threads(client_threads(num_cpus)), _flower_log_once():
            server_app(grid, server_context)
    results_path = Path(str(fused["results-dir"])).expanduser().resolve() / "results.json"
    log.info("in-process run %d finished in %.1f s: %s", run.run_id, time.perf_counter() - t0, results_path)
    return json.loads(results_path.read_text())
