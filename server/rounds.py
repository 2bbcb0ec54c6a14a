"""The federated UML run as the server drives it, round by round.

1. First contact: an institution says who it is (name, modality, data sizes) the first time
   the server needs it, never before. The server samples from every registered node, known or
   not; an institution met for the first time in this run describes itself in its reply to
   its first train message, whose instruction says whether the run is new or resumes after
   round k (so it starts or restores its private state). Where the server must know an
   institution before it sends it anything (its modality picks its group's backbone: the
   federated unimodal baseline; secure aggregation and DP weigh and group a round's cohort
   before it trains; evaluation and calibration of an institution never trained), a
   `query.describe` goes to those sampled institutions only, just before. With 1 % of 10,000
   institutions sampled, a round meets 100 institutions, not 10,000. `describe-upfront=true`
   describes every institution before round 1 instead (sampling then orders institutions
   by name from round 1, so partial participation draws the same cohorts in every run).
2. R rounds: the strategy samples the institutions of each averaging group (one group for
   UML; one per modality for the federated unimodal baseline) and, at the same fraction,
   the institutions not met yet; each trains on the backbone it was sent and the strategy
   averages what they return. Every `evaluate_every` rounds the institutions evaluate locally
   (the last round's evaluation comes with the calibration replies where everyone
   calibrates). After each round the state is checkpointed atomically, with what the server
   learned of the institutions.
3. `query.calibrate`: every institution runs Algorithm 1 on its local data, writes its model
   h_k to its own disk and reports test accuracy before and after and whether it wrote the
   model; the server averages the accuracies per modality (weighted by test size) and lists
   the institutions that wrote a model (`models_written`), never the model itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Message
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid

from fed_uml.errors import SettingsError
from fed_uml.federated import protocol, stages
from fed_uml.federated.backbone import initial_backbone
from fed_uml.federated.protocol import (
    CalibrateInstruction,
    CalibrateReport,
    DescribeInstruction,
    EvaluateInstruction,
    EvaluateReport,
    ModelFile,
    TrainInstruction,
    TrainReport,
)
from fed_uml.federated.transfer import from_wire, to_wire
from fed_uml.files import save_atomic
from fed_uml.results import claim_results_dir, file_record, make_results, write_json_atomic
from fed_uml.schema import settings_of
from server import FederationError
from server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from server.messaging import Messenger
from server.report import plot_curves, progress, summary_table
from server.roster import Roster, wait_for_nodes
from server.secure import PrivateRounds
from server.strategy import BackboneFedAvg
from server.summary import calibration_results, evaluation_metrics, train_metrics

log = FLOWER_LOGGER  # Flower streams its own logger's output to `flwr run --stream`

FEDERATED_METHODS = ("uml", "unimodal")

__all__ = ["FEDERATED_METHODS", "FederatedRun", "FederationError", "GroupBackbones"]


class GroupBackbones:
    """The global backbone of every averaging group.

    Tensors, and their wire form built once per version (one serialisation per group per round,
    shared by every message of the round and by the byte count). A group first met later (a modality
    whose institutions describe themselves in a later round) starts from `initial`, as every group
    did.
    """

    def __init__(self, tensors: Mapping[str, Mapping[str, torch.Tensor]], dtype: str,
                 initial: Mapping[str, torch.Tensor] | None = None):
        self.tensors = dict(tensors)
        self.dtype = dtype
        self.initial = initial
        self._wire: dict[str, ArrayRecord] = {}

    def wire(self, group: str) -> ArrayRecord:
        """The wire form of `group`'s backbone, built once per version."""
        if group not in self._wire:
            if group not in self.tensors:
                if self.initial is None:
                    raise KeyError(f"no backbone for averaging group {group!r}")
                self.tensors[group] = self.initial
            self._wire[group] = to_wire(self.tensors[group], self.dtype)
        return self._wire[group]

    def replace(self, group: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace `group`'s backbone (after a round's averaging)."""
        self.tensors[group] = tensors
        self._wire.pop(group, None)

    def bytes_per_institution(self) -> int:
        """Bytes of the backbone one institution is sent (every group's has the same shapes)."""
        return self.wire(next(iter(self.tensors))).count_bytes() if self.tensors else 0


class FederatedRun:
    """One federated run on the server: rounds of training and evaluation, then calibration."""

    def __init__(self, grid: Grid, cfg: Mapping, results_dir: Path, run_id: int = 0):
        """Read the run's composed config `cfg` as typed settings.

        `cfg`: the run's composed config as plain containers (it goes into results.json and the
        checkpoints), read as typed settings (`settings`, `fed_uml.schema.settings_of`).
        """
        self.grid, self.cfg, self.results_dir, self.run_id = grid, cfg, Path(results_dir), run_id
        self.settings = settings_of(cfg)
        fed = self.fed = self.settings.federated
        self.method = self.settings.method.name
        if self.method not in FEDERATED_METHODS:
            raise SettingsError(f"method={self.method!r} has no federated version; choose one of {FEDERATED_METHODS}")
        self.modalities = list(self.settings.dataset.modalities)
        self.strategy = BackboneFedAvg(weighting=fed.weighting, weighting_mix=fed.weighting_mix,
                                       fraction_train=fed.fraction_train,
                                       fraction_evaluate=fed.fraction_evaluate,
                                       fraction_calibrate=fed.fraction_calibrate, seed=self.settings.seed)
        self.dtype = fed.transfer_dtype
        self.num_rounds = fed.num_rounds
        self.min_institutions = fed.min_institutions
        if self.settings.dataset.num_classes is None:
            raise SettingsError(f"dataset {self.settings.dataset.name!r}: setting dataset.num_classes is needed to "
                                "build the backbone on the server (set it, and dataset.classes, to the label set)")
        self.roster = Roster(self.modalities, self.settings.dataset.num_classes, self.method)
        self.messenger = Messenger(grid, fed.round_timeout, self.roster.name, fed.max_in_flight)
        self.private = PrivateRounds(grid, self.settings, self.strategy, self.roster, self.messenger)  # privacy.md
        self.history: list[dict] = []
        self.contacted: set[int] = set()  # nodes whose private state this run has started (their first message)
        self.unreachable: set[int] = set()  # nodes whose first contact failed: not sampled again (see failures)
        self.resumed_after = 0  # the round this run resumes after (0: a new run), told to every node first met
        self._t_rounds, self._first_round = time.perf_counter(), 1  # for the progress line
        self.timing: dict[str, float] = {"server_start_unix": time.time()}
        self.checkpoint_path = self.results_dir / "checkpoint.pt"

    @property
    def failures(self) -> list[dict]:
        """The failures recorded so far."""
        return self.messenger.failures

    # -- phases ----------------------------------------------------------------------------
    def describe(self, nodes: list[int], server_round: int = 0) -> None:
        """`query.describe` to those of `nodes` not yet met in this run.

        They start (or, when the run resumes, restore) their private state and say who they are.
        """
        new = [n for n in nodes if n not in self.contacted]
        if not new:
            return
        t0 = time.perf_counter()
        replies = self.messenger.send({n: None for n in new}, protocol.DESCRIBE,
                                      DescribeInstruction(resumed_after_round=self.resumed_after), server_round)
        self.roster.admit(replies)
        self.contacted.update(replies)
        self.unreachable.update(n for n in new if n not in replies)
        self.timing["describe_seconds"] = self.timing.get("describe_seconds", 0.0) + time.perf_counter() - t0
        self.timing["described"] = self.timing.get("described", 0) + len(replies)

    def needs_descriptions(self) -> bool:
        """Whether the server must know an institution before its first train message.

        Its modality picks its group's backbone (one group per modality: the unimodal baseline), or
        a secure or private round weighs and groups the cohort before it trains.
        """
        return self.method != "uml" or self.private.active

    def _first_contact(self, replies: Mapping[int, Message]) -> None:
        """Admit the descriptions that came with first train replies."""
        first = {n: r for n, r in replies.items() if n not in self.contacted}
        if first:
            self.roster.admit(first)
            self.contacted.update(first)
            self.timing["described_on_first_contact"] = self.timing.get("described_on_first_contact", 0) + len(first)

    def _sample(self, connected: set[int], fraction: float | None, by: str) -> dict[str, list[int]]:
        """The cohort: `fraction` of every group of known institutions, and of the new ones.

        `by="group"`: averaging groups; `"modality"`. At the same fraction the connected
        institutions not met yet (key None), drawn by the strategy's seeded generator.
        """
        known = self.roster.groups(connected)
        if by == "modality":
            by_modality: dict[str, list[int]] = {}
            for nodes in known.values():
                for n in nodes:
                    by_modality.setdefault(self.roster.modality(n), []).append(n)
            known = by_modality
        chosen: dict = {g: self.strategy.sample(nodes, fraction) for g, nodes in known.items() if nodes}
        unknown = self.roster.unknown(connected - self.unreachable)
        if unknown:
            chosen[None] = self.strategy.sample(unknown, fraction)
        return chosen

    def _connected(self, server_round: int) -> set[int]:
        connected = set(self.grid.get_node_ids())
        for n in sorted(set(self.roster.members) - connected):
            if not self.messenger.has_failed(n, "disconnected"):
                self.messenger.record_failure(n, "disconnected", server_round, "the node left the federation")
        return connected

    def train_round(self, server_round: int, backbones: GroupBackbones) -> None:
        """One training round: sample the cohort, send the backbones, average per group."""
        t0 = time.perf_counter()
        self.timing.setdefault("first_round_unix", time.time())  # start-up ends here (benchmarks)
        connected = self._connected(server_round)
        chosen = self._sample(connected, None, "group")
        newcomers = chosen.pop(None, [])
        if self.needs_descriptions():  # know every institution of the cohort before it trains
            self.describe(newcomers + [n for nodes in chosen.values() for n in nodes], server_round)
            newcomers = [n for n in newcomers if n in self.contacted]
            chosen = {g: [n for n in nodes if n in self.contacted] for g, nodes in chosen.items()}
            for n in newcomers:
                chosen.setdefault(self.roster.group_of(n), []).append(n)
            for g in {self.roster.group_of(n) for n in newcomers}:  # as a described roster orders them: by name
                chosen[g].sort(key=lambda n: self.roster.members[n].name)
        elif newcomers:  # one averaging group: they describe themselves in their reply
            chosen.setdefault("uml", []).extend(newcomers)
        with stages.stage("server.serialise"):
            sent = {n: backbones.wire(g) for g, nodes in chosen.items() for n in nodes}
        schedule = dict(server_round=server_round, num_rounds=self.num_rounds,
                        local_epochs=self.fed.local_epochs, local_steps=self.fed.local_steps,
                        transfer_dtype=self.dtype)
        met, first = TrainInstruction(**schedule), TrainInstruction(**schedule,
                                                                    first_contact_after_round=self.resumed_after)

        def instruction(node: int) -> TrainInstruction:  # the first message of this run restores or starts its state
            return met if node in self.contacted else first

        if self.private.active:  # secure aggregation and/or differential privacy (server/secure.py)
            # the DP sampling rate's denominator: a modality's institutions known so far (an upper bound
            # on the rate until all have described themselves), or everyone connected (UML's one group)
            population = self.roster.groups(connected)
            if self.method == "uml":
                population["uml"] = population.get("uml", []) + self.roster.unknown(connected - self.unreachable)
            reports, extras = self.private.train_round(server_round, chosen, population, backbones, met,
                                                       self.min_institutions, self.history)
            record = {"round": server_round, "participants": len(sent), "answered": len(reports)}
            bytes_sent = backbones.bytes_per_institution()
            record.update(extras)
            record.update(train_metrics((self.roster.modality(n), rep) for n, rep in self.roster.by_name(reports)))
        else:
            replies = self.messenger.send(sent, protocol.TRAIN, instruction, server_round)
            if len(replies) < min(self.min_institutions, len(sent)):
                raise FederationError(
                    f"round {server_round}: {len(replies)} of {len(sent)} institutions answered, fewer than "
                    f"federated.min_institutions={self.min_institutions}"
                )
            first_met = {n for n in replies if n not in self.contacted}
            self.unreachable.update(n for n in sent if n not in replies and n not in self.contacted)
            self._first_contact(replies)
            record = {"round": server_round, "participants": len(sent), "answered": len(replies)}
            bytes_sent = backbones.bytes_per_institution()  # of the backbone sent this round
            for g, nodes in chosen.items():
                got = [n for n in nodes if n in replies]
                if first_met.intersection(got):  # averaged in the order a described roster gives: by name
                    got.sort(key=lambda n: self.roster.members[n].name)
                if not got:
                    log.warning("round %d: no institution of group %s answered; its backbone is unchanged",
                                server_round, g)
                    continue
                with stages.stage("server.aggregate"):
                    agg = self.strategy.aggregate(server_round, [replies[n] for n in got],
                                                  [self.roster.modality(n) for n in got])
                    if agg is not None:
                        backbones.replace(g, from_wire(agg))
            record.update(train_metrics((self.roster.modality(n), TrainReport.from_content(r.content))
                                        for n, r in self.roster.by_name(replies)))
        record["seconds"] = time.perf_counter() - t0
        record["bytes_sent_per_institution"] = bytes_sent
        self.history.append(record)
        log.info("%s: %s", progress(server_round, self.num_rounds, time.perf_counter() - self._t_rounds,
                                    server_round - self._first_round + 1),
                 " ".join(f"{k}={v:.3f}" for k, v in record.items() if "/" in k))

    def _everyone(self, backbones: GroupBackbones, fraction: float = 1.0) -> dict[int, ArrayRecord]:
        """Every connected institution with the backbone of its group.

        With `fraction` < 1 that fraction of each modality's institutions (at least one each) and of
        those not met yet, drawn by the strategy. Those not met in this run describe themselves
        first (they start or restore their private state).
        """
        connected = set(self.grid.get_node_ids())
        picked = {n for nodes in self._sample(connected, fraction, "modality").values() for n in nodes}
        self.describe(sorted(picked), self.history[-1]["round"] if self.history else 0)
        return {n: backbones.wire(g) for g, nodes in self.roster.groups(connected).items() for n in nodes
                if n in picked and n in self.contacted}

    def evaluate_round(self, server_round: int, backbones: GroupBackbones) -> None:
        """Evaluate the current backbones on every chosen institution and record the metrics."""
        replies = self.messenger.send(self._everyone(backbones, self.strategy.fraction_evaluate), protocol.EVALUATE,
                                      EvaluateInstruction(server_round=server_round), server_round)
        self._record_evaluation(server_round, (
            (self.roster.modality(n), EvaluateReport.from_content(r.content)) for n, r in replies.items()))

    def _record_evaluation(self, server_round: int, reports, note: str = "") -> None:
        metrics = evaluation_metrics(reports)
        record = self.history[-1] if self.history and self.history[-1]["round"] == server_round else {}
        record.update(metrics)
        log.info("round %d evaluation%s: %s", server_round, note,
                 " ".join(f"{k.replace('/test_', ' ')}={v:.4f}" for k, v in metrics.items()))

    def last_evaluation_by_calibration(self) -> bool:
        """Whether the last round's evaluation comes from the calibration replies instead of an evaluate message.

        Where every institution both evaluates and calibrates, each one's accuracy before
        calibration is its evaluation of the final model (the same model, the same test share, the
        same code), so asking for it twice would only cost a pass over every test set (about a
        training round in the main job).
        """
        return (bool(self.fed.evaluate_every) and self.strategy.fraction_evaluate >= 1
                and self.strategy.fraction_calibrate >= 1)

    def calibrate(self, backbones: GroupBackbones) -> tuple[dict, list, dict]:
        """Per-modality results, per-institution entries, and the model files institutions wrote.

        Returns (per-modality results, per-institution entries, the model files institutions wrote
        under the results folder: {relative path: {sha256, bytes}}).
        """
        instruction = CalibrateInstruction(server_round=self.num_rounds,
                                           calibration_epochs=self.settings.calibration.epochs,
                                           results_dir=str(self.results_dir))
        replies = self.messenger.send(self._everyone(backbones, self.strategy.fraction_calibrate), protocol.CALIBRATE,
                                      instruction, self.num_rounds)
        reports = [(self.roster.members[n], CalibrateReport.from_content(r.content))
                   for n, r in self.roster.by_name(replies)]
        models = {n: ModelFile.from_content(r.content) for n, r in replies.items() if protocol.MODEL_FILE in r.content}
        if self.last_evaluation_by_calibration():
            self._record_evaluation(self.num_rounds, (
                (m.modality, EvaluateReport(num_examples=r.num_examples, accuracy=r.accuracy_before_calibration,
                                            scores=r.scores_before)) for m, r in reports), " (before calibration)")
        modalities, per_inst = calibration_results(reports, self.modalities, self.settings.method.calibrate)
        by_name = {self.roster.members[n].name: m for n, m in models.items()}
        for entry in per_inst:
            if entry["name"] in by_name:
                entry["model_sha256"] = by_name[entry["name"]].sha256
        files = {m.path: {"sha256": m.sha256, "bytes": m.bytes} for m in models.values() if m.path}
        return modalities, per_inst, files

    # -- the whole run -----------------------------------------------------------------------
    def execute(self) -> dict:
        """Run the rounds (or resume them), calibrate, and write results.json; returns the results."""
        t0 = time.perf_counter()
        claim_results_dir(self.results_dir, setting="results-dir", resume=self.settings.resume, overwrite=None)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        log.info("federated %s on %s, results in %s", self.method, self.settings.dataset.name, self.results_dir)
        resumed = load_checkpoint(self.checkpoint_path, self.cfg, self.settings.resume)
        if resumed is not None:
            self.history = resumed.history
            self.messenger.failures = resumed.failures
            self.strategy.rng.setstate(resumed.rng)
        done = resumed.round if resumed is not None else 0
        self.resumed_after = done
        nodes = wait_for_nodes(self.grid, self.min_institutions, self.messenger.timeout)
        self.timing["describe_seconds"] = 0.0  # part of the start-up (benchmarks)
        if resumed is not None:
            self.roster.restore(resumed.members, set(nodes))
        if self.fed.describe_upfront:
            self.describe(nodes)
            if len(self.roster) < self.min_institutions:
                raise FederationError(f"{len(self.roster)} institution(s) answered describe; "
                                      f"federated.min_institutions={self.min_institutions}")
        backbones = GroupBackbones(resumed.arrays if resumed is not None else {}, self.dtype,
                                   initial=initial_backbone(self.cfg))
        every = self.fed.evaluate_every
        self._t_rounds, self._first_round = time.perf_counter(), done + 1
        for server_round in range(done + 1, self.num_rounds + 1):
            self.train_round(server_round, backbones)
            last = server_round == self.num_rounds
            if every and (server_round % every == 0 or last) and not (last and self.last_evaluation_by_calibration()):
                self.evaluate_round(server_round, backbones)
            with stages.stage("server.checkpoint"):
                save_checkpoint(self.checkpoint_path, Checkpoint(server_round, backbones.tensors, self.history,
                                                                 self.failures, self.strategy.rng.getstate(),
                                                                 self.roster.to_records()), self.cfg)
            stages.flush("server")
            if server_round == self.fed.stop_after_round and server_round < self.num_rounds:
                log.warning("stopping after round %d as requested (federated.stop_after_round); continue with "
                            "resume=true and the same results-dir", server_round)
                return {}
        t_cal = time.perf_counter()
        modalities, per_inst, model_files = self.calibrate(backbones)
        self.timing["calibration_seconds"] = time.perf_counter() - t_cal
        stages.flush("server")
        save_atomic({k: {n: t.detach().cpu().clone() for n, t in v.items()} for k, v in backbones.tensors.items()},
                    self.results_dir / "backbone.pt")
        curves = plot_curves(self.history, modalities, self.num_rounds, self.results_dir / "curves.png")
        written = [self.results_dir / "backbone.pt", self.checkpoint_path] + ([curves] if curves else [])
        results = make_results(
            self.method, self.settings.dataset.name, self.settings.seed, True, modalities, self.cfg,
            time.perf_counter() - t0,
            rounds=self.num_rounds,
            local_epochs=self.fed.local_epochs,
            history=self.history,
            institutions=per_inst,
            models_written=sorted(i["name"] for i in per_inst if i["model_saved"]),
            failures=self.failures,
            run_id=self.run_id,
            timing=self.timing,
            files={**file_record(self.results_dir, written), **model_files},
        )
        path = write_json_atomic(self.results_dir / "results.json", results)
        log.info("federated %s after %d rounds, %.0f s:\n%s", self.method, self.num_rounds, time.perf_counter() - t0,
                 summary_table(modalities, self.settings.method.calibrate))
        missing = sorted(i["name"] for i in per_inst if not i["model_saved"])
        log.info("institutions that wrote their model to their own disk: %s", ", ".join(results["models_written"]))
        if missing:
            log.warning("institutions that wrote no model: %s (see their logs)", ", ".join(missing))
        log.info("wrote %s%s", path, f" and {curves.name}" if curves else "")
        return results
