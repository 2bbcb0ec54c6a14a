"""The in-process engine for sweeps (localrun/inprocess.py): the project's ServerApp and
ClientApp through an in-process Grid compute what `flwr run` computes."""

from __future__ import annotations

import json

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fed_uml.federated.config import run_config_from_overrides
from localrun.inprocess import InProcessGrid, load_apps, node_contexts, run_inprocess, task_identity
from tests.flower_helpers import GOLDEN, TINY, assert_same_metrics, run_metrics


def test_the_engine_loads_the_apps_flwr_run_loads():
    from clients.client_app import app as client_app
    from server.server_app import app as server_app

    assert load_apps() == (server_app, client_app)


def test_the_engine_reproduces_what_flwr_run_computed(tmp_path):
    """The job of tests/test_flower_runtime.py::test_same_seed_same_metrics_as_before_the_scale_work
    (8 institutions, client sampling, 3 messages in flight) through the engine: the metrics that
    `flwr run` computed for it (`GOLDEN`). Every institution trains in round 2 from the private
    state it kept in its node's Context after round 1 (a node without it fails the message,
    clients/handlers.py), so a run without failures also shows that each node's state persists."""
    overrides = TINY.split() + ["federated.num_rounds=2", "federated.evaluate_every=1",
                                "federated.fraction_train=0.75"]
    run_config = run_config_from_overrides(overrides, **{"results-dir": str(tmp_path / "r")})
    run_config["max-in-flight"] = 3
    run_config["describe-upfront"] = True  # the golden cohorts (see that test's docstring)
    results = run_inprocess(run_config, num_supernodes=8, num_cpus=1)
    assert results == json.loads((tmp_path / "r" / "results.json").read_text())
    assert not results["failures"]
    assert sorted(i["name"] for i in results["institutions"]) == [f"{m}-{i}" for m in ("rgb", "sar") for i in range(4)]
    golden = json.loads(GOLDEN.read_text())
    golden.pop("_about")
    assert_same_metrics(run_metrics(results), golden)


def test_the_engine_needs_a_results_dir_and_known_keys(tmp_path):
    from fed_uml.errors import SettingsError

    with pytest.raises(SettingsError, match="results-dir"):
        run_inprocess({"seed": 1}, num_supernodes=2)
    with pytest.raises(SettingsError, match="no-such-key"):
        run_inprocess({"results-dir": str(tmp_path), "no-such-key": 1}, num_supernodes=2)


def _echo_app() -> ClientApp:
    app = ClientApp()

    @app.query("count")
    def count(msg: Message, context: Context) -> Message:
        from flwr.app import MetricRecord

        seen = int(context.state["seen"]["n"]) + 1 if "seen" in context.state else 1
        context.state["seen"] = MetricRecord({"n": seen})
        return Message(RecordDict({"seen": MetricRecord({"n": seen,
                                                          "partition": int(context.node_config["partition-id"])})}),
                       reply_to=msg)

    @app.query("fail")
    def fail(msg: Message, context: Context) -> Message:
        raise RuntimeError("this institution broke")

    return app


def test_the_grid_delivers_with_each_nodes_context_and_reports_errors():
    from flwr.supercore.run import Run

    run = Run.create_empty(7)
    contexts = node_contexts(run, 3, {"seed": 0}, seed=0)
    grid = InProcessGrid(_echo_app(), run, contexts)
    nodes = list(grid.get_node_ids())
    assert len(set(nodes)) == 3 and [contexts[n].node_config for n in nodes] == [
        {"partition-id": p, "num-partitions": 3} for p in range(3)]
    with task_identity(run):
        def ask(node, action):
            return Message(RecordDict(), dst_node_id=node, message_type=f"query.{action}")

        # the node's state persists across messages; each node has its own
        for expected in (1, 2):
            replies = list(grid.send_and_receive([ask(nodes[0], "count")]))
            assert replies[0].content["seen"]["n"] == expected
        other = list(grid.send_and_receive([ask(nodes[2], "count")]))[0]
        assert other.content["seen"]["n"] == 1 and other.content["seen"]["partition"] == 2
        # a reply is pulled once, matched to the message it answers
        sent = ask(nodes[1], "count")
        ids = list(grid.push_messages([sent]))
        assert ids == [sent.metadata.message_id]
        (reply,) = grid.pull_messages(ids)
        assert reply.metadata.reply_to_message_id == ids[0] and list(grid.pull_messages(ids)) == []
        # a node that does not exist gets nothing; a ClientApp that raises answers with an error
        assert list(grid.push_messages([ask(12345, "count")])) == []
        (error,) = grid.send_and_receive([ask(nodes[1], "fail")])
        assert error.has_error() and error.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        assert "this institution broke" in error.error.reason


@pytest.mark.slow
def test_same_seed_same_metrics_through_flwr_run_and_the_engine(flower_runtime, tmp_path):
    """One run config through `flwr run` (Ray simulation, one CPU per client) and through the
    engine (one torch thread, as a one-CPU Ray actor has): the same metrics bit for bit. Here
    the federated unimodal baseline with modality weighting and 2 + 4 institutions (one
    averaging group per modality), evaluated every round.

    Bit for bit, not within a tolerance: both run the same code on the same messages in one
    environment. Two sources of last-bit differences are ruled out: torch's thread count (with
    2 threads instead of a one-CPU actor's 1, round 1's SAR training loss here moves by 1.7e-8
    relative; the engine gives its clients the actor's threads,
    `localrun.inprocess.client_threads`), and the order of the sums over institutions (the
    server summed in the order of node ids, which the simulation draws at random, and float
    addition depends on the order; it now sums in the order of institution names,
    `server.roster.Roster.by_name`)."""
    overrides = TINY.split() + ["method=unimodal", "federated.weighting=modality", "federated.num_rounds=2",
                                "federated.evaluate_every=1", 'federated.institutions_per_modality="sar:2,rgb:4"']
    federation = {"num-supernodes": 6, "client-resources-num-cpus": 1}
    flower_runtime.start_superlink(simulation=True)
    flower_runtime.run(run_config_from_overrides(overrides, **{"results-dir": str(tmp_path / "flwr")}), federation)
    by_flwr = json.loads((tmp_path / "flwr" / "results.json").read_text())
    by_engine = run_inprocess(run_config_from_overrides(overrides, **{"results-dir": str(tmp_path / "engine")}),
                              num_supernodes=6, num_cpus=1)
    assert by_flwr["modalities"]["sar"]["institutions"] == 2 and by_flwr["modalities"]["rgb"]["institutions"] == 4
    assert not by_flwr["failures"] and not by_engine["failures"]
    assert_same_metrics(run_metrics(by_engine), run_metrics(by_flwr), rel=0)
    assert [i["name"] for i in by_engine["institutions"]] == [i["name"] for i in by_flwr["institutions"]]


def test_privacy_utility_runs_dp_and_secure_aggregation_on_the_engine(tmp_path):
    """The privacy grid on the engine: institution-level DP rounds and SecAgg+ rounds (Flower's
    secaggplus_mod and SecAggPlusWorkflow stages, several messages per round through the Grid)
    run to the end and report their epsilon and their SecAgg+ traffic."""
    from experiments.privacy_utility import main

    out = main(["--engine", "inprocess", "--institutions", "4", "--seeds", "0", "--noise", "0.5",
                "--methods", "uml", "--cost-institutions", "4", "--out", str(tmp_path), *TINY.split(),
                "federated.num_rounds=2", "federated.evaluate_every=0"])
    assert [r["modality"] for r in out["utility"]] == ["rgb", "sar"] and 0 < out["utility"][0]["epsilon"] < 1e9
    plain, secure = out["cost"]
    assert (plain["aggregation"], secure["aggregation"]) == ("fedavg", "secagg+") and secure["rounds"] == 2
    assert secure["bytes_per_round"] > 0 and (tmp_path / "secagg_cost.md").exists()
