"""The federated UML run as the server drives it, round by round.

1. `query.describe`: every connected institution reports its modality index and data sizes.
2. R rounds: each participating institution trains L local epochs on the backbone it was
   sent; `BackboneFedAvg` averages the backbones it returns (one group for UML; one group
   per modality for the federated unimodal baseline). Every `evaluate_every` rounds the
   institutions evaluate locally. After each round the state is checkpointed atomically.
3. `query.calibrate`: every institution runs Algorithm 1 on its local data, writes its model
   h_k to its own disk and reports test accuracy before and after and whether it wrote the
   model; the server averages the accuracies per modality (weighted by test size) and lists
   the institutions that wrote a model (`models_written`), never the model itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid

from fed_uml.federated.backbone import initial_backbone
from fed_uml.federated.transfer import from_wire, to_wire
from fed_uml.results import make_results, write_json_atomic
from server.strategy import BackboneFedAvg

log = FLOWER_LOGGER  # Flower streams its own logger's output to `flwr run --stream`

FEDERATED_METHODS = ("uml", "unimodal")
# Settings that may change between a stopped run and its resumption.
_RESUME_FREE = ("results_dir", "federated.resume", "federated.round_timeout", "federated.audit_log", "num_threads",
                "federated.stop_after_round", "federated.state_dir")


class FederationError(RuntimeError):
    """The federation cannot go on (too few institutions answered)."""


def _config_digest(cfg: Mapping) -> str:
    c = json.loads(json.dumps(cfg, default=str))
    for dotted in _RESUME_FREE:
        node = c
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()


class FederatedRun:
    def __init__(self, grid: Grid, cfg: Mapping, results_dir: Path, run_id: int = 0):
        self.grid, self.cfg, self.results_dir, self.run_id = grid, cfg, Path(results_dir), run_id
        fed = cfg["federated"]
        self.fed = fed
        self.method = cfg["method"]["name"]
        if self.method not in FEDERATED_METHODS:
            raise ValueError(f"method={self.method!r} has no federated version; choose one of {FEDERATED_METHODS}")
        self.modalities = list(cfg["dataset"]["modalities"])
        self.strategy = BackboneFedAvg(
            weighting=fed["weighting"],
            fraction_train=float(fed["fraction_train"]),
            min_train_nodes=1,
            min_available_nodes=1,
        )
        self.dtype = str(fed["transfer_dtype"])
        self.timeout = float(fed["round_timeout"])
        self.min_institutions = int(fed["min_institutions"])
        self.history: list[dict] = []
        self.failures: list[dict] = []
        self.institutions: dict[int, dict] = {}  # node id -> description
        self.rng = random.Random(int(cfg["seed"]))
        self.checkpoint_path = self.results_dir / "checkpoint.pt"

    # -- messaging -----------------------------------------------------------------------
    def _send(self, node_arrays: Mapping[int, dict], message_type: str, config: dict) -> dict[int, Message]:
        """Send each node its backbone (or nothing) and return the replies by node id."""
        messages = []
        for node_id, arrays in node_arrays.items():
            content = RecordDict({"config": ConfigRecord(config)})
            if arrays is not None:
                content["arrays"] = to_wire(arrays, self.dtype)
            messages.append(Message(content=content, message_type=message_type, dst_node_id=node_id))
        received = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            # an error reply made by the SuperLink for an unreachable node may carry no content
            # and another source id: match replies to the messages they answer
            received[reply.metadata.reply_to_message_id] = reply
        replies = {}
        for msg in messages:
            node_id = msg.metadata.dst_node_id
            reply = received.get(msg.metadata.message_id)
            if reply is None or reply.has_error() or not reply.has_content():
                reason = ("no reply before the timeout" if reply is None
                          else reply.error.reason if reply.has_error() else "empty reply")
                self._record_failure(node_id, message_type, config.get("server-round", 0), reason)
            else:
                replies[node_id] = reply
        return replies

    def _record_failure(self, node_id: int, stage: str, server_round: int, reason: str) -> None:
        inst = self.institutions.get(node_id, {})
        lines = [ln.strip() for ln in str(reason).splitlines() if ln.strip()]
        entry = {"node_id": node_id, "institution": inst.get("name"), "stage": stage, "round": server_round,
                 "error": lines[-1] if lines else "", "reason": str(reason)[-4000:]}
        self.failures.append(entry)
        log.warning("institution %s (node %d) failed at %s round %s: %s", inst.get("name"), node_id, stage,
                    server_round, entry["error"])

    # -- phases ----------------------------------------------------------------------------
    def wait_for_institutions(self) -> list[int]:
        deadline = time.monotonic() + self.timeout
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.min_institutions or time.monotonic() > deadline:
                break
            log.info("waiting for institutions: %d connected, %d needed", len(nodes), self.min_institutions)
            time.sleep(2)
        if len(nodes) < self.min_institutions:
            raise FederationError(f"only {len(nodes)} institution(s) connected; federated.min_institutions="
                                  f"{self.min_institutions}")
        return nodes

    def describe(self, nodes: list[int]) -> None:
        replies = self._send({n: None for n in nodes}, f"{MessageType.QUERY}.describe", {})
        num_classes = int(self.cfg["dataset"]["num_classes"])
        for node_id, reply in sorted(replies.items()):
            m = reply.content["metrics"]
            modality = self.modalities[int(m["modality-index"])]
            desc = {
                "node_id": node_id,
                "modality": modality,
                "name": f"{modality}-{int(m['institution-index'])}",
                "n_train": int(m["n-train"]),
                "n_test": int(m["n-test"]),
            }
            if int(m["num-classes"]) != num_classes:
                raise FederationError(
                    f"institution {desc['name']} has {int(m['num-classes'])} classes but dataset.num_classes="
                    f"{num_classes}"
                )
            self.institutions[node_id] = desc
        names = [d["name"] for d in self.institutions.values()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FederationError(f"two nodes claim the same institution {dupes}: check their node configs")
        missing = [m for m in self.modalities if not any(d["modality"] == m for d in self.institutions.values())]
        if missing:
            log.warning("no institution holds modality %s", missing)
        names = (f"{d['name']} ({d['n_train']} train)" for d in self.institutions.values())
        log.info("institutions: %s", ", ".join(names))

    def groups(self) -> dict[str, list[int]]:
        """Which institutions average their backbones together."""
        # Ordered by institution name, not node id (node ids change between runs), so that
        # client sampling is reproducible and a resumed run samples as the original would.
        ordered = sorted(self.institutions, key=lambda n: self.institutions[n]["name"])
        if self.method == "uml":
            return {"uml": ordered}
        by_modality = defaultdict(list)
        for node_id in ordered:
            by_modality[self.institutions[node_id]["modality"]].append(node_id)
        return dict(by_modality)

    def sample(self, nodes: list[int]) -> list[int]:
        k = max(1, int(round(len(nodes) * float(self.fed["fraction_train"]))))
        return self.rng.sample(nodes, k) if k < len(nodes) else list(nodes)

    def train_round(self, server_round: int, arrays: dict[str, dict]) -> dict[str, dict]:
        t0 = time.perf_counter()
        connected = set(self.grid.get_node_ids())
        for n in sorted(set(self.institutions) - connected):
            if not any(f["node_id"] == n and f["stage"] == "disconnected" for f in self.failures):
                self._record_failure(n, "disconnected", server_round, "the node left the federation")
        groups = {g: [n for n in nodes if n in connected] for g, nodes in self.groups().items()}
        chosen = {g: self.sample(nodes) for g, nodes in groups.items() if nodes}
        node_arrays = {n: arrays[g] for g, nodes in chosen.items() for n in nodes}
        config = {"server-round": server_round, "local-epochs": int(self.fed["local_epochs"]),
                  "transfer-dtype": self.dtype}
        replies = self._send(node_arrays, MessageType.TRAIN, config)
        if len(replies) < min(self.min_institutions, len(node_arrays)):
            raise FederationError(
                f"round {server_round}: {len(replies)} of {len(node_arrays)} institutions answered, fewer than "
                f"federated.min_institutions={self.min_institutions}"
            )
        new_arrays = dict(arrays)
        record = {"round": server_round, "participants": len(node_arrays), "answered": len(replies)}
        for g, nodes in chosen.items():
            got = [replies[n] for n in nodes if n in replies]
            if not got:
                log.warning("round %d: no institution of group %s answered; its backbone is unchanged", server_round, g)
                continue
            agg, _ = self.strategy.aggregate_train(server_round, got)
            if agg is not None:
                new_arrays[g] = from_wire(agg)
        per_mod = defaultdict(lambda: [0.0, 0.0, 0.0])
        for n, reply in replies.items():
            m = reply.content["metrics"]
            s = per_mod[self.institutions[n]["modality"]]
            w = float(m["num-examples"])
            s[0] += w * float(m["train-loss"])
            s[1] += w * float(m["train-accuracy"])
            s[2] += w
        for mod, (loss, acc, w) in per_mod.items():
            record[f"{mod}/train_loss"] = loss / w
            record[f"{mod}/train_accuracy"] = acc / w
        record["seconds"] = time.perf_counter() - t0
        record["bytes_sent_per_institution"] = to_wire(next(iter(arrays.values())), self.dtype).count_bytes()
        self.history.append(record)
        log.info("round %d/%d: %s", server_round, int(self.fed["num_rounds"]),
                 " ".join(f"{k}={v:.3f}" for k, v in record.items() if "/" in k))
        return new_arrays

    def _per_node_arrays(self, arrays: dict[str, dict]) -> dict[int, dict]:
        connected = set(self.grid.get_node_ids())
        return {n: arrays[g] for g, nodes in self.groups().items() for n in nodes if n in connected}

    def evaluate_round(self, server_round: int, arrays: dict[str, dict]) -> None:
        replies = self._send(self._per_node_arrays(arrays), MessageType.EVALUATE, {"server-round": server_round})
        acc = defaultdict(lambda: [0.0, 0.0])
        for n, reply in replies.items():
            m = reply.content["metrics"]
            a = acc[self.institutions[n]["modality"]]
            a[0] += float(m["num-examples"]) * float(m["accuracy"])
            a[1] += float(m["num-examples"])
        record = self.history[-1] if self.history and self.history[-1]["round"] == server_round else {}
        for mod, (s, w) in acc.items():
            record[f"{mod}/test_accuracy"] = s / w
        log.info("round %d evaluation: %s", server_round,
                 " ".join(f"{mod}={s / w:.4f}" for mod, (s, w) in acc.items()))

    def calibrate(self, arrays: dict[str, dict]) -> tuple[dict, list]:
        replies = self._send(
            self._per_node_arrays(arrays), f"{MessageType.QUERY}.calibrate",
            {"calibration-epochs": int(self.cfg["calibration"]["epochs"]),
             "server-round": int(self.fed["num_rounds"]),
             # where an institution without a node-local state-dir or model-dir writes its model
             "results-dir": str(self.results_dir)},
        )
        per_mod = defaultdict(lambda: {"before": 0.0, "after": 0.0, "n_test": 0, "n_train": 0, "institutions": 0})
        per_inst = []
        for n, reply in sorted(replies.items()):
            m = reply.content["metrics"]
            d = self.institutions[n]
            nt = float(m["num-examples"])
            s = per_mod[d["modality"]]
            s["before"] += nt * float(m["accuracy-before-calibration"])
            s["after"] += nt * float(m["accuracy-after-calibration"])
            s["n_test"] += int(nt)
            s["n_train"] += int(m["n-train"])
            s["institutions"] += 1
            per_inst.append({
                **d,
                "accuracy_before_calibration": float(m["accuracy-before-calibration"]),
                "accuracy_after_calibration": float(m["accuracy-after-calibration"]),
                # whether it wrote its model to its own disk (the model never reaches the server)
                "model_saved": bool(int(m.get("model-saved", 0))),
            })
        use_calibrated = bool(self.cfg["method"].get("calibrate", self.method == "uml"))
        modalities = {}
        for mod in self.modalities:
            if mod not in per_mod:
                continue
            s = per_mod[mod]
            before, after = s["before"] / s["n_test"], s["after"] / s["n_test"]
            modalities[mod] = {
                "accuracy": after if use_calibrated else before,
                "accuracy_before_calibration": before,
                "accuracy_after_calibration": after,
                "n_train": s["n_train"],
                "n_test": s["n_test"],
                "institutions": s["institutions"],
            }
        return modalities, per_inst

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, server_round: int, arrays: dict[str, dict]) -> None:
        state = {
            "round": server_round,
            "arrays": {g: {k: v.clone() for k, v in a.items()} for g, a in arrays.items()},
            "history": self.history,
            "failures": self.failures,
            "rng": self.rng.getstate(),
            "config_digest": _config_digest(self.cfg),
        }
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def load_checkpoint(self) -> tuple[int, dict[str, dict]] | None:
        if not self.fed.get("resume") or not self.checkpoint_path.exists():
            if self.fed.get("resume"):
                log.warning("resume requested but %s does not exist: starting at round 1", self.checkpoint_path)
            return None
        state = torch.load(self.checkpoint_path, weights_only=False)
        if state["config_digest"] != _config_digest(self.cfg):
            raise FederationError(
                f"{self.checkpoint_path} was written with other settings; resume only with the same config "
                f"(or use another results-dir)"
            )
        self.history, self.failures = state["history"], state["failures"]
        self.rng.setstate(state["rng"])
        log.info("resuming after round %d from %s", state["round"], self.checkpoint_path)
        return state["round"], state["arrays"]

    # -- the whole run -----------------------------------------------------------------------
    def execute(self) -> dict:
        t0 = time.perf_counter()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        if (self.results_dir / "results.json").exists() and not self.fed.get("resume"):
            raise FederationError(f"{self.results_dir / 'results.json'} exists; choose another results-dir "
                                  "(earlier results are never overwritten)")
        log.info("federated %s on %s, results in %s", self.method, self.cfg["dataset"]["name"], self.results_dir)
        self.describe(self.wait_for_institutions())
        if len(self.institutions) < self.min_institutions:
            raise FederationError(f"{len(self.institutions)} institution(s) answered describe; "
                                  f"federated.min_institutions={self.min_institutions}")
        start_round, arrays = 1, None
        resumed = self.load_checkpoint()
        if resumed is not None:
            done, arrays = resumed
            start_round = done + 1
        else:
            init = initial_backbone(self.cfg)
            arrays = {g: init for g in self.groups()}
        num_rounds = int(self.fed["num_rounds"])
        every = int(self.fed["evaluate_every"])
        for server_round in range(start_round, num_rounds + 1):
            arrays = self.train_round(server_round, arrays)
            if every and (server_round % every == 0 or server_round == num_rounds):
                self.evaluate_round(server_round, arrays)
            self.save_checkpoint(server_round, arrays)
            if server_round == int(self.fed.get("stop_after_round") or 0) and server_round < num_rounds:
                log.warning("stopping after round %d as requested (federated.stop_after_round); continue with "
                            "resume=true and the same results-dir", server_round)
                return {}
        modalities, per_inst = self.calibrate(arrays)
        torch.save(arrays, self.results_dir / "backbone.pt")
        results = make_results(
            self.method, self.cfg["dataset"]["name"], self.cfg["seed"], True, modalities, self.cfg,
            time.perf_counter() - t0,
            rounds=num_rounds,
            local_epochs=int(self.fed["local_epochs"]),
            history=self.history,
            institutions=per_inst,
            models_written=sorted(i["name"] for i in per_inst if i["model_saved"]),
            failures=self.failures,
            run_id=self.run_id,
        )
        path = write_json_atomic(self.results_dir / "results.json", results)
        for mod, m in modalities.items():
            log.info("%s: accuracy %.4f (before calibration %.4f, after %.4f) over %d institution(s)", mod,
                     m["accuracy"], m["accuracy_before_calibration"], m["accuracy_after_calibration"],
                     m["institutions"])
        missing = sorted(i["name"] for i in per_inst if not i["model_saved"])
        log.info("institutions that wrote their model to their own disk: %s", ", ".join(results["models_written"]))
        if missing:
            log.warning("institutions that wrote no model: %s (see their logs)", ", ".join(missing))
        log.info("wrote %s", path)
        return results
