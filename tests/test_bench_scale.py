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
