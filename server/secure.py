"""Training rounds with secure aggregation and/or institution-level differential privacy.

Secure aggregation drives the four stages of Flower's own `SecAggPlusWorkflow` (setup, share
keys, collect masked vectors, unmask) from the project's round driver, one protocol instance
per averaging group and round. The workflow is written for Flower's legacy strategy loop: it
reads the round and the strategy from a `LegacyContext`, asks `strategy.configure_fit` whom to
sample and hands the unmasked sum to `strategy.aggregate_fit`. Here `_Plan` stands in for that
strategy (the institutions the round driver chose; it captures the sum), the stages are called
one by one with one `WorkflowState`, and after `setup` the state's train contents are replaced
by the project's own messages (TrainInstruction + backbone + the institution's SecureInstruction),
so that the institution's `train` handler runs unchanged under `secaggplus_mod`. The server
only ever holds public keys, encrypted key shares, masked integer vectors and the unmasked
sum; the train replies it gets carry no backbone array (`secure_audit` checks that).

Weights: SecAgg+ weighs by an integer `num_examples` per reply. Each institution instead
pre-scales its update by its weight w_i / max_j w_j (in (0, 1]: the largest uses the whole
quantisation range) and replies with weight 1; the server multiplies the unmasked mean by the
number K of summed institutions and divides by the known total of the pre-scaling weights of
those K. Updates (returned minus sent), not parameters, are summed: they are small, so the
quantisation range c can be small and its step 2c/Q fine; the server adds the mean update to
the backbone it sent. `federated.weighting` gives w_i as in the plain run, from the data sizes
the institutions declared (`describe`); if one drops mid-round the others keep their weights.

Differential privacy (with or without secure aggregation): updates clipped to C, N(0, (zC)^2)
added to the weighted sum (`fed_uml.privacy.GaussianSumMechanism`), epsilon from the
accountant after every round into the round record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.common.logger import FLOWER_LOGGER
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState
from flwr.serverapp import Grid

from fed_uml.federated import protocol
from fed_uml.federated.protocol import ClipInstruction, SecureInstruction, TrainReport
from fed_uml.federated.transfer import as_float32, from_wire
from fed_uml.privacy import GaussianSumMechanism, clip_update, privacy_settings, secure_settings
from fed_uml.privacy.accountant import PrivacyAccountant
from fed_uml.schema import Settings
from server import FederationError

log = FLOWER_LOGGER

STAGES = ("setup", "share-keys", "collect-masked-vectors", "unmask")


class _Proxy(ClientProxy):
    """A node id where the legacy workflow expects a ClientProxy (it only reads `node_id`)."""

    def __init__(self, node_id: int):
        super().__init__(str(node_id))
        self.node_id = node_id

    def _unused(self, *args, **kwargs):
        raise NotImplementedError("the SecAgg+ stages only read a proxy's node_id")

    get_properties = get_parameters = fit = evaluate = reconnect = _unused


class _Plan:
    """The legacy strategy of the workflow: the chosen nodes; captures the unmasked sum."""

    def __init__(self, nodes):
        self.nodes = list(nodes)
        self.results: list = []
        self.vectors: list[np.ndarray] | None = None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(_Proxy(n), FitIns(Parameters(tensors=[], tensor_type=""), {})) for n in self.nodes]

    def aggregate_fit(self, server_round, results, failures):
        self.results = list(results)
        if results:  # the workflow put the unmasked mean into every result
            self.vectors = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}


class _CountingGrid:
    """The grid, counting the bytes of every message content it sends and receives."""

    def __init__(self, grid: Grid):
        self.grid, self.bytes_down, self.bytes_up, self.replies = grid, 0, 0, []

    @staticmethod
    def _bytes(content: RecordDict) -> int:
        """Payload bytes: arrays' data, bytes values' length, 8 per number, keys' length."""
        def size(v) -> int:
            if isinstance(v, (bytes, str)):
                return len(v)
            if isinstance(v, list):
                return sum(size(x) for x in v)
            return 8

        total = 0
        for record in content.values():
            if isinstance(record, ArrayRecord):
                total += record.count_bytes()
            else:
                total += sum(len(k) + size(v) for k, v in record.items())
        return total

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.bytes_down += sum(self._bytes(m.content) for m in messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.bytes_up += sum(self._bytes(r.content) for r in replies if r.has_content())
        self.replies.extend(replies)
        return replies

    def __getattr__(self, name):
        return getattr(self.grid, name)


def secure_audit(replies: list[Message]) -> dict:
    """What the server received in the clear during a secure round: arrays (none expected)."""
    arrays = sum(len(rec) for r in replies if r.has_content() for rec in r.content.array_records.values())
    return {"arrays_in_clear": arrays, "replies": len(replies)}


class SecureSum:
    """One SecAgg+ sum of pre-scaled updates over one group's institutions in one round."""

    def __init__(self, settings, timeout: float):
        self.settings, self.timeout = settings, float(timeout)

    def run(self, grid: Grid, server_round: int, contents: Mapping[int, RecordDict]) -> dict:
        """Sum the updates of `contents` through SecAgg+; returns the sums."""
        s = self.settings
        workflow = SecAggPlusWorkflow(s.num_shares, s.reconstruction_threshold, max_weight=1.0,
                                      clipping_range=s.clipping_range, quantization_range=s.quantization_range,
                                      modulus_range=s.modulus_range, timeout=self.timeout)
        plan = _Plan(contents)
        context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                                strategy=plan)  # type: ignore[arg-type]
        context.state[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: int(server_round)})
        context.state[MAIN_PARAMS_RECORD] = ArrayRecord()
        counting = _CountingGrid(grid)
        state = WorkflowState()
        stages = dict(zip(STAGES, (workflow.setup_stage, workflow.share_keys_stage,
                                   workflow.collect_masked_vectors_stage, workflow.unmask_stage), strict=True))
        lost: dict[int, str] = {}
        summed: set[int] = set()
        halted = None
        for name, stage in stages.items():
            before = set(contents) if name == "setup" else set(state.active_node_ids)
            ok = stage(counting, context, state)
            if name == "setup":  # the project's train messages, one content per node
                state.nid_to_fitins = {n: contents[n] for n in state.nid_to_fitins}
            if name in ("setup", "share-keys"):
                # a node gone before it shared its keys is in nobody's masks: out of the protocol
                # (Flower 1.42's workflow would list it as dead at unmask, and the survivors,
                # holding none of its shares, would all fail)
                state.sampled_node_ids = set(state.active_node_ids)
            for n in sorted(before - set(state.active_node_ids)):
                lost.setdefault(n, name)
            if name == "collect-masked-vectors":
                summed = set(state.active_node_ids)
            if not ok:
                halted = name
                break
        # the train reports (scalars, in the clear) of the institutions whose masked vector arrived
        reports = {proxy.node_id: fitres.metrics for proxy, fitres in state.legacy_results}
        return {"vectors": plan.vectors if halted is None else None, "summed": sorted(summed), "lost": lost,
                "halted": halted, "reports": reports, "bytes_down": counting.bytes_down,
                "bytes_up": counting.bytes_up, "audit": secure_audit(counting.replies)}


class PrivateRounds:
    """Train rounds of a run with secure aggregation and/or differential privacy."""

    def __init__(self, grid: Grid, settings: Settings, strategy, roster, messenger):
        fed = settings.federated
        self.grid, self.strategy, self.roster, self.messenger = grid, strategy, roster, messenger
        self.secure = secure_settings(fed)
        self.dp = privacy_settings(fed)
        self.mechanism = GaussianSumMechanism(self.dp, seed=settings.seed)
        self.accountant = PrivacyAccountant(self.dp.delta)
        self.timeout = fed.round_timeout
        self._restored = False

    @property
    def active(self) -> bool:
        """Whether secure aggregation or differential privacy is on."""
        return self.secure.enabled or self.dp.enabled

    def restore(self, history: list[dict]) -> None:
        """Restore the accountant and the clipping norm from a resumed run's history."""
        self.accountant.restore(history)
        norms = [r["dp_clipping_norm_next"] for r in history if "dp_clipping_norm_next" in r]
        if norms:
            self.mechanism.clipping_norm = float(norms[-1])

    # -- weights ----------------------------------------------------------------------------
    def prescale(self, nodes: list[int], examples: list[float] | None = None) -> dict[int, float]:
        """Each node's weight over the largest, in (0, 1] (`federated.weighting`)."""
        if examples is None:
            examples = [self.roster.members[n].n_train for n in nodes]
        w = self.strategy.weights(examples, [self.roster.modality(n) for n in nodes])
        top = max(w)
        return {n: wi / top for n, wi in zip(nodes, w, strict=True)}

    def _extras(self, content: RecordDict) -> RecordDict:
        if self.dp.enabled:
            ClipInstruction(clipping_norm=self.mechanism.clipping_norm, adaptive=self.dp.adaptive).add_to(content)
        return content

    # -- one round ----------------------------------------------------------------------------
    def train_round(self, server_round: int, chosen: Mapping[str, list[int]], groups: Mapping[str, list[int]],
                    backbones, instruction, min_institutions: int,
                    history: list[dict]) -> tuple[dict[int, TrainReport], dict]:
        """Train the chosen institutions of every group.

        Replace each group's backbone with the (secure and/or noisy) mean; return the reports by
        node and the round record's extras.
        """
        if not self._restored:  # a resumed run goes on counting epsilon and adapting C
            self.restore(history)
            self._restored = True
        sent = sum(len(v) for v in chosen.values())
        record: dict = {}
        reports: dict[int, TrainReport] = {}
        clip_norm = self.mechanism.clipping_norm
        outcomes = {}
        t0 = time.perf_counter()
        if self.secure.enabled:
            for g, nodes in chosen.items():
                self.secure.check_group(g, len(nodes))
            for g, nodes in chosen.items():
                weights = self.prescale(nodes)
                contents = {n: self._extras(SecureInstruction(weight=weights[n],
                                                              clipping_range=self.secure.clipping_range)
                                            .add_to(instruction.content(backbones.wire(g)))) for n in nodes}
                out = SecureSum(self.secure, self.timeout).run(self.grid, server_round, contents)
                for n, stage in out["lost"].items():
                    self.messenger.record_failure(n, f"{protocol.TRAIN}.secagg+.{stage}", server_round,
                                                  f"no valid reply at the SecAgg+ {stage} stage")
                for n, metrics in out["reports"].items():
                    reports[n] = TrainReport.from_record(metrics)
                outcomes[g] = out
        else:
            sent_wire = {n: backbones.wire(g) for g, nodes in chosen.items() for n in nodes}
            replies = self.messenger.send(sent_wire, protocol.TRAIN, _WithClipping(instruction, self), server_round)
            for g, nodes in chosen.items():
                outcomes[g] = {"replies": {n: replies[n] for n in nodes if n in replies}}
            reports = {n: TrainReport.from_content(r.content) for n, r in replies.items()}
        if len(reports) < min(min_institutions, sent):
            raise FederationError(f"round {server_round}: {len(reports)} of {sent} institutions answered, fewer than "
                                  f"federated.min_institutions={min_institutions}")
        steps, stds, unclipped_total, counted = {}, [], 0.0, 0
        for g, out in outcomes.items():
            received = from_wire(backbones.wire(g))
            keys = [k for k, v in received.items() if v.is_floating_point()]
            if self.secure.enabled:
                if out["vectors"] is None:
                    log.warning("round %d: secure aggregation of group %s halted at its %s stage (too few "
                                "institutions left to unmask the sum); its backbone is unchanged",
                                server_round, g, out["halted"])
                    record.setdefault("secure_halted", {})[g] = out["halted"]
                    continue
                k = len(out["summed"])
                weights = self.prescale(chosen[g])
                weight_total = sum(weights[n] for n in out["summed"])
                vectors = [np.asarray(v, dtype=np.float64) * k for v in out["vectors"]]
                if self.dp.adaptive:
                    unclipped = float(np.rint(vectors.pop()[0] / self.secure.clipping_range))
                else:
                    unclipped = 0.0
                weighted_sum = dict(zip(keys, vectors, strict=True))
                record["secure_bytes_down"] = record.get("secure_bytes_down", 0) + out["bytes_down"]
                record["secure_bytes_up"] = record.get("secure_bytes_up", 0) + out["bytes_up"]
                record["secure_arrays_in_clear"] = record.get("secure_arrays_in_clear", 0) + \
                    out["audit"]["arrays_in_clear"]
                record.setdefault("secure_quantisation_bound", {})[g] = self.secure.quantisation_bound(
                    [weights[n] for n in out["summed"]])
                exceeded = sum(int(out["reports"][n].get(protocol.SECURE_RANGE_EXCEEDED, 0))
                               for n in out["reports"])
                record["secure_range_exceeded"] = record.get("secure_range_exceeded", 0) + exceeded
                if exceeded:
                    log.warning("round %d: %d update elements of group %s lay outside secure_clipping_range=%g and "
                                "were clipped by the quantisation; raise secure_clipping_range", server_round,
                                exceeded, g, self.secure.clipping_range)
            else:
                got = list(out["replies"])
                if not got:
                    log.warning("round %d: no institution of group %s answered; its backbone is unchanged",
                                server_round, g)
                    continue
                k = len(got)
                examples = [TrainReport.from_content(out["replies"][n].content).num_examples for n in got]
                weights = self.prescale(got, examples)
                weight_total = sum(weights.values())
                weighted_sum = {key: 0.0 for key in keys}
                unclipped = 0.0
                for n in got:
                    _, update = _update(received, from_wire(as_float32(out["replies"][n].content[protocol.ARRAYS])),
                                        keys)
                    update, within = clip_update(update, clip_norm)  # re-clipped: the bound holds exactly
                    unclipped += float(within)
                    for key in keys:
                        weighted_sum[key] = weighted_sum[key] + weights[n] * update[key]
            if self.dp.enabled:
                mean, std = self.mechanism.noisy_mean(weighted_sum, weight_total, k, server_round, g)
                stds.append(std)
                q = len(chosen[g]) / max(1, len(groups[g]))
                steps[g] = (q, self.mechanism.update_noise_multiplier(k))
                self.accountant.record(g, *steps[g])
                unclipped_total += unclipped
                counted += k
            else:
                mean = {key: v / weight_total for key, v in weighted_sum.items()}
            new = dict(received)
            for key in keys:
                new[key] = (received[key].double() + torch.from_numpy(np.asarray(mean[key]))).to(torch.float32)
            backbones.replace(g, new)
        if self.dp.enabled:
            if self.dp.adaptive:
                self.mechanism.adapt(unclipped_total, counted, server_round, "all")
            record.update({
                "dp_clipping_norm": clip_norm,
                "dp_clipping_norm_next": self.mechanism.clipping_norm,
                "dp_noise_stddev": max(stds, default=0.0),
                "dp_steps": {g: list(v) for g, v in steps.items()},
                "dp_epsilon": self.accountant.epsilon(),
                "dp_delta": self.dp.delta,
            })
        if self.secure.enabled:
            record["secure_seconds"] = time.perf_counter() - t0
            record["secure_summed"] = sum(len(o.get("summed", [])) for o in outcomes.values())
        return reports, record


def _update(received, returned, keys):
    return keys, {k: returned[k].double().numpy() - received[k].double().numpy() for k in keys}


class _WithClipping:
    """A train instruction whose messages also carry the clipping record (plain path under DP)."""

    def __init__(self, instruction, rounds: PrivateRounds):
        self.instruction, self.rounds = instruction, rounds

    def content(self, arrays=None) -> RecordDict:
        return self.rounds._extras(self.instruction.content(arrays))
