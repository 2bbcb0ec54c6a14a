"""The federated UML run as the server drives it, round by round.

1. `query.describe`: every connected institution says who it is (name, modality, data sizes);
   the instruction tells it whether the run is new or resumes after round k. Where the first
   round needs nothing from the descriptions (federated UML, `fraction-train=1`, no secure
   aggregation or DP; `describe-upfront=false`, the default) they come instead with the
   first round's train replies ("first contact"): one message less to every institution at
   start-up, the same run otherwise (the replies are averaged in the same order).
2. R rounds: the strategy samples the institutions of each averaging group (one group for
   UML; one per modality for the federated unimodal baseline); each trains on the backbone it
   was sent and the strategy averages what they return. Every `evaluate_every` rounds the
   institutions evaluate locally (the last round's evaluation comes with the calibration
   replies where everyone calibrates). After each round the state is checkpointed atomically.
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
from flwr.app import ArrayRecord
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid

from fed_uml.errors import SettingsError
from fed_uml.federated import protocol
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
from fed_uml.results import claim_results_dir, deploys_calibrated, file_record, make_results, write_json_atomic
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
    """The global backbone of every averaging group: tensors, and their wire form built once
    per version (one serialisation per group per round, shared by every message of the round
    and by the byte count)."""

    def __init__(self, tensors: Mapping[str, Mapping[str, torch.Tensor]], dtype: str):
        self.tensors = dict(tensors)
        self.dtype = dtype
        self._wire: dict[str, ArrayRecord] = {}

    def wire(self, group: str) -> ArrayRecord:
        if group not in self._wire:
            self._wire[group] = to_wire(self.tensors[group], self.dtype)
        return self._wire[group]

    def replace(self, group: str, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors[group] = tensors
        self._wire.pop(group, None)

    def bytes_per_institution(self) -> int:
        """Bytes of the backbone one institution is sent (every group's has the same shapes)."""
        return self.wire(next(iter(self.tensors))).count_bytes()


class FederatedRun:
    def __init__(self, grid: Grid, cfg: Mapping, results_dir: Path, run_id: int = 0):
        self.grid, self.cfg, self.results_dir, self.run_id = grid, cfg, Path(results_dir), run_id
        fed = self.fed = cfg["federated"]
        self.method = cfg["method"]["name"]
        if self.method not in FEDERATED_METHODS:
            raise SettingsError(f"method={self.method!r} has no federated version; choose one of {FEDERATED_METHODS}")
        self.modalities = list(cfg["dataset"]["modalities"])
        self.strategy = BackboneFedAvg(weighting=fed["weighting"], fraction_train=float(fed["fraction_train"]),
                                       fraction_evaluate=float(fed["fraction_evaluate"]),
                                       fraction_calibrate=float(fed["fraction_calibrate"]),
                                       seed=int(cfg["seed"]))
        self.dtype = str(fed["transfer_dtype"])
        self.num_rounds = int(fed["num_rounds"])
        self.min_institutions = int(fed["min_institutions"])
        self.roster = Roster(self.modalities, int(cfg["dataset"]["num_classes"]), self.method)
        self.messenger = Messenger(grid, float(fed["round_timeout"]), self.roster.name,
                                   int(fed.get("max_in_flight") or 0))
        self.private = PrivateRounds(grid, cfg, self.strategy, self.roster, self.messenger)  # docs/privacy.md
        self.history: list[dict] = []
        self._first_contact: tuple[list[int], int] | None = None  # (nodes, resumed after round) until round 1 is back
        self._t_rounds, self._first_round = time.perf_counter(), 1  # for the progress line
        self.timing: dict[str, float] = {"server_start_unix": time.time()}
        self.checkpoint_path = self.results_dir / "checkpoint.pt"

    @property
    def failures(self) -> list[dict]:
        return self.messenger.failures

    # -- phases ----------------------------------------------------------------------------
    def describe(self, nodes: list[int], resumed_after_round: int) -> None:
        replies = self.messenger.send({n: None for n in nodes}, protocol.DESCRIBE,
                                      DescribeInstruction(resumed_after_round=resumed_after_round))
        self.roster.admit(replies)
        if len(self.roster) < self.min_institutions:
            raise FederationError(f"{len(self.roster)} institution(s) answered describe; "
                                  f"federated.min_institutions={self.min_institutions}")

    def describes_on_first_contact(self) -> bool:
        """Whether institutions describe themselves in their first train reply instead of in
        answer to `query.describe`: only where round 1 needs nothing from the descriptions
        (one averaging group, everyone trains, no secure or private round which weighs and
        groups institutions before they train)."""
        return (self.method == "uml" and self.strategy.fraction_train >= 1 and not self.private.active
                and not self.fed.get("describe_upfront"))

    def _admit_first_contact(self, replies: Mapping) -> None:
        self._first_contact = None
        self.roster.admit(replies)
        if len(self.roster) < self.min_institutions:
            raise FederationError(f"{len(self.roster)} institution(s) answered their first train message; "
                                  f"federated.min_institutions={self.min_institutions}")

    def _connected(self, server_round: int) -> set[int]:
        connected = set(self.grid.get_node_ids())
        for n in sorted(set(self.roster.members) - connected):
            if not self.messenger.has_failed(n, "disconnected"):
                self.messenger.record_failure(n, "disconnected", server_round, "the node left the federation")
        return connected

    def train_round(self, server_round: int, backbones: GroupBackbones) -> None:
        t0 = time.perf_counter()
        self.timing.setdefault("first_round_unix", time.time())  # start-up ends here (benchmarks)
        first = self._first_contact
        if first is not None:  # nobody described yet: every institution connected at the start
            connected = set(self.grid.get_node_ids())
            groups = {"uml": [n for n in first[0] if n in connected]}
        else:
            groups = self.roster.groups(self._connected(server_round))
        chosen = {g: self.strategy.sample(nodes) for g, nodes in groups.items() if nodes}
        sent = {n: backbones.wire(g) for g, nodes in chosen.items() for n in nodes}
        instruction = TrainInstruction(
            server_round=server_round, num_rounds=self.num_rounds, local_epochs=int(self.fed["local_epochs"]),
            local_steps=int(self.fed.get("local_steps") or 0), transfer_dtype=self.dtype,
            first_contact_after_round=None if first is None else first[1],
        )
        if self.private.active:  # secure aggregation and/or differential privacy (server/secure.py)
            reports, extras = self.private.train_round(server_round, chosen, groups, backbones, instruction,
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
            if first is not None:
                self._admit_first_contact(replies)
            record = {"round": server_round, "participants": len(sent), "answered": len(replies)}
            bytes_sent = backbones.bytes_per_institution()  # of the backbone sent this round
            for g, nodes in chosen.items():
                got = [n for n in nodes if n in replies]
                if first is not None:  # averaged in the order a described roster gives: by name
                    got.sort(key=lambda n: self.roster.members[n].name)
                if not got:
                    log.warning("round %d: no institution of group %s answered; its backbone is unchanged",
                                server_round, g)
                    continue
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
        """Every connected institution with the backbone of its group; with `fraction` < 1 that
        fraction of each modality's institutions (at least one each), drawn by the strategy."""
        connected = set(self.grid.get_node_ids())
        everyone = {n: backbones.wire(g) for g, nodes in self.roster.groups().items() for n in nodes if n in connected}
        if fraction >= 1:
            return everyone
        by_modality: dict[str, list[int]] = {}
        for n in everyone:
            by_modality.setdefault(self.roster.modality(n), []).append(n)
        chosen = {n for nodes in by_modality.values() for n in self.strategy.sample(nodes, fraction)}
        return {n: wire for n, wire in everyone.items() if n in chosen}

    def evaluate_round(self, server_round: int, backbones: GroupBackbones) -> None:
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
        """Whether the last round's evaluation comes from the calibration replies instead of an
        evaluate message: where every institution both evaluates and calibrates, each one's
        accuracy before calibration is its evaluation of the final model (the same model, the
        same test share, the same code), so asking for it twice would only cost a pass over
        every test set (about a training round in the main job)."""
        return (bool(int(self.fed["evaluate_every"])) and self.strategy.fraction_evaluate >= 1
                and self.strategy.fraction_calibrate >= 1)

    def calibrate(self, backbones: GroupBackbones) -> tuple[dict, list, dict]:
        """(per-modality results, per-institution entries, the model files institutions wrote
        under the results folder: {relative path: {sha256, bytes}})."""
        instruction = CalibrateInstruction(server_round=self.num_rounds,
                                           calibration_epochs=int(self.cfg["calibration"]["epochs"]),
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
        modalities, per_inst = calibration_results(reports, self.modalities, deploys_calibrated(self.cfg["method"]))
        by_name = {self.roster.members[n].name: m for n, m in models.items()}
        for entry in per_inst:
            if entry["name"] in by_name:
                entry["model_sha256"] = by_name[entry["name"]].sha256
        files = {m.path: {"sha256": m.sha256, "bytes": m.bytes} for m in models.values() if m.path}
        return modalities, per_inst, files

    # -- the whole run -----------------------------------------------------------------------
    def execute(self) -> dict:
        t0 = time.perf_counter()
        claim_results_dir(self.results_dir, setting="results-dir", resume=bool(self.cfg.get("resume")), overwrite=None)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        log.info("federated %s on %s, results in %s", self.method, self.cfg["dataset"]["name"], self.results_dir)
        resumed = load_checkpoint(self.checkpoint_path, self.cfg, bool(self.cfg.get("resume")))
        if resumed is not None:
            self.history = resumed.history
            self.messenger.failures = resumed.failures
            self.strategy.rng.setstate(resumed.rng)
        done = resumed.round if resumed is not None else 0
        nodes = wait_for_nodes(self.grid, self.min_institutions, self.messenger.timeout)
        if self.describes_on_first_contact() and done < self.num_rounds:
            self._first_contact = (nodes, done)
            self.timing["describe_seconds"] = 0.0  # they describe themselves in round 1's replies
            self.timing["described_on_first_contact"] = 1
        else:
            t_describe = time.perf_counter()
            self.describe(nodes, done)
            self.timing["describe_seconds"] = time.perf_counter() - t_describe  # part of the start-up (benchmarks)
        if resumed is not None:
            tensors = resumed.arrays
        else:
            init = initial_backbone(self.cfg)
            tensors = {g: init for g in self.roster.groups()}
        backbones = GroupBackbones(tensors, self.dtype)
        every = int(self.fed["evaluate_every"])
        self._t_rounds, self._first_round = time.perf_counter(), done + 1
        for server_round in range(done + 1, self.num_rounds + 1):
            self.train_round(server_round, backbones)
            last = server_round == self.num_rounds
            if every and (server_round % every == 0 or last) and not (last and self.last_evaluation_by_calibration()):
                self.evaluate_round(server_round, backbones)
            save_checkpoint(self.checkpoint_path, Checkpoint(server_round, backbones.tensors, self.history,
                                                             self.failures, self.strategy.rng.getstate()), self.cfg)
            if server_round == int(self.fed.get("stop_after_round") or 0) and server_round < self.num_rounds:
                log.warning("stopping after round %d as requested (federated.stop_after_round); continue with "
                            "resume=true and the same results-dir", server_round)
                return {}
        t_cal = time.perf_counter()
        modalities, per_inst, model_files = self.calibrate(backbones)
        self.timing["calibration_seconds"] = time.perf_counter() - t_cal
        save_atomic({k: {n: t.detach().cpu().clone() for n, t in v.items()} for k, v in backbones.tensors.items()},
                    self.results_dir / "backbone.pt")
        curves = plot_curves(self.history, modalities, self.num_rounds, self.results_dir / "curves.png")
        written = [self.results_dir / "backbone.pt", self.checkpoint_path] + ([curves] if curves else [])
        results = make_results(
            self.method, self.cfg["dataset"]["name"], self.cfg["seed"], True, modalities, self.cfg,
            time.perf_counter() - t0,
            rounds=self.num_rounds,
            local_epochs=int(self.fed["local_epochs"]),
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
                 summary_table(modalities, deploys_calibrated(self.cfg["method"])))
        missing = sorted(i["name"] for i in per_inst if not i["model_saved"])
        log.info("institutions that wrote their model to their own disk: %s", ", ".join(results["models_written"]))
        if missing:
            log.warning("institutions that wrote no model: %s (see their logs)", ", ".join(missing))
        log.info("wrote %s%s", path, f" and {curves.name}" if curves else "")
        return results
