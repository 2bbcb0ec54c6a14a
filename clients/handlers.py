"""What an institution does with each message of the protocol (`fed_uml.federated.protocol`).

`describe`, `train`, `evaluate` and `calibrate`, called by the ClientApp (`clients.client_app`).

Private (kept in `context.state`, never sent): the projection and all BN running
statistics. Sent: the backbone parameters and scalar reports. After calibration each
institution writes its model h_k to its own disk (`model_dir`); the report says only whether
it did, and the file's SHA-256 (`protocol.ModelFile`), never its contents.

Private state across messages: the first message of every run sets it (`describe`, or the
first `train` where the server describes institutions on first contact: that instruction
carries `resumed-after-round` and its reply the description): the initial projection in a
new run, or, when the run resumes after round k, the state the institution saved in its
node-local store after round k (or after the last round before k it trained in). From then
on `context.state` holds it, updated by every `train`. A message that finds no private state
after round 0 fails (`_private`).
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message

from fed_uml.federated import protocol, roles, stages
from fed_uml.federated.config import config_from_run_config
from fed_uml.federated.institution import Institution
from fed_uml.federated.private_store import PrivateStateStore
from fed_uml.federated.protocol import (
    CalibrateInstruction,
    DescribeInstruction,
    EvaluateInstruction,
    ModelFile,
    TrainInstruction,
)
from fed_uml.federated.transfer import from_wire, to_wire
from fed_uml.model_file import model_filename
from fed_uml.preflight import check_device
from fed_uml.results import sha256_file
from fed_uml.schema import settings_of

_PRIVATE = "private"  # the key of the private state in context.state (never sent)


def _timed(name: str):
    """Time the handler as stage `name`, flushed with its parts after each message.

    (`fed_uml.federated.stages`: only when the scale benchmark switches the timers on.)
    """
    def wrap(handler):
        @functools.wraps(handler)
        def timed(msg: Message, context: Context) -> Message:
            try:
                with stages.stage(name):
                    return handler(msg, context)
            finally:
                stages.flush("client")
        return timed
    return wrap


class _InstitutionCache:
    """The institutions this process has played, by run and node, least recently used first.

    Why: a Ray actor plays many virtual institutions, one message at a time, and composing the
    settings and cutting and standardising an institution's data share cost about as much as
    a round of its training (measured at 1,000 institutions). What is cached is only what the
    run config and node config determine (settings, the standardised data share: tensors, or for
    a data set streamed from its store only row numbers and the store's handle); the private
    state (projection, BN statistics) stays in `context.state`. Bounded by the bytes of the
    cached data shares (`max_bytes`): an institution evicted is rebuilt, identically, on its
    next message.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[Institution, int]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(context: Context) -> tuple:
        return (context.run_id, context.node_id, json.dumps(dict(context.run_config), sort_keys=True, default=str),
                json.dumps(dict(context.node_config), sort_keys=True, default=str))

    def get(self, context: Context) -> Institution:
        key = self.key(context)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        inst = _new_institution(context)
        size = sum(t.nbytes for part in (inst.train, inst.test) for t in (part.images, part.labels))
        self._items[key] = (inst, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, freed) = self._items.popitem(last=False)
            self._bytes -= freed
        return inst

    def __len__(self) -> int:
        return len(self._items)


def _new_institution(context: Context) -> Institution:
    cfg = config_from_run_config(context.run_config)
    settings = settings_of(cfg)
    check_device(settings.device)  # the server checked the rest; the device is this node's
    node_state = context.node_config.get(roles.STATE_DIR)
    store = cfg["dataset"].get("store")
    if node_state and isinstance(store, dict) and not store.get("dir"):  # deployment: the node's own disk
        store["dir"] = str(Path(str(node_state)).expanduser() / "store")
    ident = roles.institution_for_node(
        context.node_config, settings.dataset.modalities, settings.federated.institutions_per_modality
    )
    return Institution(cfg, ident)


_INSTITUTIONS = _InstitutionCache(max_bytes=2 * 2**30)


def _institution(context: Context) -> Institution:
    with stages.stage("client.institution"):
        inst = _INSTITUTIONS.get(context)
    threads = inst.run_settings.num_threads
    if threads > 0:
        torch.set_num_threads(threads)
    return inst


def _state_dir(context: Context, inst: Institution) -> str | None:
    return context.node_config.get(roles.STATE_DIR) or inst.run_settings.federated.state_dir or None


def _store(context: Context, inst: Institution) -> PrivateStateStore | None:
    state_dir = _state_dir(context, inst)
    return PrivateStateStore(state_dir, inst.ident.name) if state_dir else None


def _start_private(context: Context, inst: Institution, resumed_after_round: int) -> None:
    """The private state a run starts from, into `context.state` (and the node-local store)."""
    store = _store(context, inst)
    if resumed_after_round == 0:
        initial = inst.initial_private_state()
        context.state[_PRIVATE] = ArrayRecord(initial)
        if store is not None:
            store.start(initial)
        return
    if store is None:
        raise RuntimeError(f"institution {inst.ident.name}: resuming after round {resumed_after_round} needs its "
                           "private state, but no state-dir is set")
    _, state = store.resume(resumed_after_round)
    context.state[_PRIVATE] = ArrayRecord(state)


def _private(context: Context, inst: Institution, last_round: int):
    """This institution's private state after `last_round` (held in `context.state` since `describe`).

    None (the initial projection) only before round 1.

    A node without it after round 0 has lost its state (e.g. a SuperNode restarted in the
    middle of a run) and fails loudly rather than restarting from the initial projection: a
    restart would pair an untrained projection and fresh BN statistics with a backbone of
    round k, and the run would report that institution's accuracy with nothing in
    results.json to say so. Its error reply is recorded in the run's `failures` and the others
    go on; a run with a state-dir continues across server restarts through `resume`.
    """
    if _PRIVATE in context.state:
        return context.state[_PRIVATE].to_torch_state_dict()
    if last_round == 0:
        return None
    raise RuntimeError(f"institution {inst.ident.name}: no private state after round {last_round} in this node's "
                       "context (the node lost it, or the run's first message did not set it); refusing to "
                       "restart from the initial projection")


def _reply(msg: Message, report, arrays: ArrayRecord | None = None) -> Message:
    return Message(report.content(arrays), reply_to=msg)


@_timed("client.message.describe")
def describe(msg: Message, context: Context) -> Message:
    """Start (or restore) the private state and reply with the institution's `Description`."""
    inst = _institution(context)
    _start_private(context, inst, DescribeInstruction.from_content(msg.content).resumed_after_round)
    return _reply(msg, inst.describe())


@_timed("client.message.train")
def train(msg: Message, context: Context) -> Message:
    """Train the received backbone locally; reply with the new backbone and a `TrainReport`."""
    inst = _institution(context)
    task = TrainInstruction.from_content(msg.content)
    if task.first_contact_after_round is not None:  # no query.describe came first: this is it
        _start_private(context, inst, task.first_contact_after_round)
    with stages.stage("client.decode"):
        backbone = from_wire(msg.content[protocol.ARRAYS])
    shared, private, report = inst.fit(
        backbone, _private(context, inst, task.server_round - 1), task.server_round,
        task.local_epochs, num_rounds=task.num_rounds, local_steps=task.local_steps,
    )
    context.state[_PRIVATE] = ArrayRecord(private)
    store = _store(context, inst)
    if store is not None:
        store.save(task.server_round, private)
    with stages.stage("client.encode"):
        content = report.content(to_wire(shared, task.transfer_dtype))
    if task.first_contact_after_round is not None:
        inst.describe().add_to(content)
    return Message(content, reply_to=msg)


@_timed("client.message.evaluate")
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received backbone with the private state; reply with an `EvaluateReport`."""
    inst = _institution(context)
    task = EvaluateInstruction.from_content(msg.content)
    return _reply(msg, inst.evaluate(from_wire(msg.content[protocol.ARRAYS]),
                                     _private(context, inst, task.server_round)))


def model_dir(context: Context, inst: Institution, suggested: str | None) -> Path | None:
    """Where this institution writes its model (node-local, never sent), first that is set.

    node-config `model-dir` (the folder itself); node-config or run-config `state-dir`
    (`<state-dir>/<institution>/`, beside its private round state); else the folder the server
    suggests, `<results-dir>/institutions/<institution>/` (in a simulation the run's results folder
    stands in for every institution's own disk).
    """
    node_dir = context.node_config.get(roles.MODEL_DIR)
    if node_dir:
        return Path(str(node_dir)).expanduser()
    state_dir = _state_dir(context, inst)
    if state_dir:
        return Path(str(state_dir)).expanduser() / inst.ident.name
    if suggested:
        return Path(str(suggested)).expanduser() / "institutions" / inst.ident.name
    return None


@_timed("client.message.calibrate")
def calibrate(msg: Message, context: Context) -> Message:
    """Calibrate, write the model file to the node's own disk and reply with a `CalibrateReport`."""
    inst = _institution(context)
    task = CalibrateInstruction.from_content(msg.content)
    folder = model_dir(context, inst, task.results_dir)
    report = inst.calibrate(from_wire(msg.content[protocol.ARRAYS]), _private(context, inst, task.server_round),
                            model_dir=folder, epochs=task.calibration_epochs)
    content = report.content()
    if report.model_saved and folder is not None:
        _model_file(folder / model_filename(inst.ident.modality), task.results_dir).add_to(content)
    return Message(content, reply_to=msg)


def _model_file(path: Path, results_dir: str | None) -> ModelFile:
    """What the server records of the model file this institution wrote (never the file itself)."""
    relative = ""
    if results_dir:
        try:
            relative = path.resolve().relative_to(Path(results_dir).expanduser().resolve()).as_posix()
        except ValueError:  # written outside the run's results folder (state-dir, model-dir)
            pass
    return ModelFile(path=relative, sha256=sha256_file(path), bytes=path.stat().st_size)
