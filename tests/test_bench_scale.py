"""The scale benchmark's bookkeeping: process kinds and the py-spy profile summary."""

from __future__ import annotations

import pytest

from experiments.bench.scale import kind_of, summarize_profile


def test_process_kinds():
    assert kind_of(["/v/bin/python", "/v/bin/flower-superlink", "--simulation"]) == "superlink"
    assert kind_of(["/v/bin/flwr-simulation", "--token", "x"]) == "simulation (ServerApp + Ray driver)"
    assert kind_of(["ray::ClientAppActor.run"]) == "clientapp actors"
    assert kind_of(["/v/lib/ray/core/src/ray/raylet/raylet"]) == "ray services"
    assert kind_of(["/bin/bash"]) == "other"


def test_profile_summary_shares_per_process_kind(tmp_path):
    raw = tmp_path / "profile.txt"
    raw.write_text(
        'process 10:"/v/bin/flwr-simulation --x";main (a.py:1);send (b.py:2) 30\n'
        'process 10:"/v/bin/flwr-simulation --x";main (a.py:1);aggregate (c.py:3) 10\n'
        'process 9:"flower-superlink --x";process 11:"ray::ClientAppActor.run";'
        'run (d.py:4);train_unpaired (loop.py:5) 45\n'
        'process 11:"/v/ray/_private/workers/default_worker.py";run (d.py:4);load (e.py:6);load (e.py:7) 15\n'
        "not a stack line\n")
    s = summarize_profile(raw)
    assert list(s) == ["clientapp actors", "simulation (ServerApp + Ray driver)"]
    assert s["clientapp actors"]["share"] == pytest.approx(60 / 100)
    actors = dict(s["clientapp actors"]["functions"])
    assert actors["run"] == pytest.approx(1.0) and actors["train_unpaired"] == pytest.approx(0.75)
    assert actors["load"] == pytest.approx(0.25)  # a recursive function counts once per sample
    server = dict(s["simulation (ServerApp + Ray driver)"]["functions"])
    assert server["send"] == pytest.approx(0.75) and server["aggregate"] == pytest.approx(0.25)


def test_flower_delivery_sweep_runs_on_flowers_own_link_state():
    """The benchmark drives Flower's own classes (a canary for a Flower upgrade): one sweep
    hands out every stored message, one per node."""
    from experiments.bench.flower_delivery import sweep_seconds

    seconds, delivered = sweep_seconds(nodes=20, in_flight=7, repeats=1)
    assert delivered == 7 and seconds > 0


def test_startup_counts_what_round_1_took_beyond_a_later_round():
    from experiments.bench.scale import startup_and_round

    # launched at 100, round 1 started at 110 and took 7 s, later rounds 2 s: 5 s of round 1 were start-up
    got = startup_and_round(100.0, 110.0, [7.0, 2.0, 2.0])
    assert got == {"startup_s": 15.0, "round_s": 2.0, "round1_extra_s": 5.0}
    assert startup_and_round(100.0, 110.0, [1.0, 2.0])["startup_s"] == 10.0  # a fast round 1 is no credit
    assert startup_and_round(100.0, 110.0, [3.0]) == {"startup_s": 10.0, "round_s": 3.0, "round1_extra_s": 0.0}


def test_the_timed_main_job_is_the_readmes():
    import re
    import shlex

    from experiments.bench.scale import MAIN_JOB_FEDERATION
    from tests.test_docs import _text

    first = next(line for line in _text().splitlines() if "flwr run" in line)
    words = shlex.split(first[first.index("flwr run"):])
    assert words[:3] == ["flwr", "run", "."] and "--run-config" not in words
    federation = dict(re.findall(r"([\w-]+)=(\S+)", words[words.index("--federation-config") + 1]))
    assert {k: int(v) for k, v in federation.items()} == MAIN_JOB_FEDERATION


@pytest.mark.slow
def test_flowers_floor_runs_through_the_real_runtime():
    """The numpy-only minimal app the benchmark compares against runs through `flwr run` and
    reports the timing the comparison reads."""
    from experiments.bench.scale import flower_floor

    got = flower_floor(n=3, rounds=2, cpus=1, gpus=0.0)
    assert got["floor_wall_s"] > got["floor_startup_s"] > got["floor_to_serverapp_s"] > 0
    assert got["floor_round_s"] > 0 and got["floor_round1_extra_s"] >= 0


@pytest.mark.slow
def test_speed_probe_times_a_training_step():
    from experiments.bench.common import speed_probe

    assert 0 < speed_probe(steps=2) < 60_000
