"""Shared fixtures: tiny synthetic modalities and a small trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """The real sample data: FED_UML_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("FED_UML_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _flower_runtime_only_in_slow_tests(request, monkeypatch):
    """The fast loop (`pytest -m "not slow"`) stays fast only if every test that starts the
    Flower runtime is marked `slow`: one that is not fails here, saying so."""
    if request.node.get_closest_marker("slow") is None:
        from localrun.flower import FlowerRuntime

        def refuse(*_args, **_kwargs):
            pytest.fail(f"{request.node.nodeid} starts the Flower runtime: mark it @pytest.mark.slow", pytrace=False)

        monkeypatch.setattr(FlowerRuntime, "__init__", refuse)


# The tiny sizes of the tests' runs, as settings of the real conf/ (`tiny_config`).
TINY_SETTINGS = {"model.width": 8, "training.batch_size": 8, "training.lr": 0.003, "training.log_every": 0,
                 "calibration.batch_size": 16, "num_threads": 1}


def tiny_config(method="uml", modalities=("sar", "rgb"), epochs=1, samples_per_class=3, test_samples_per_class=2,
                image_size=16, **settings) -> dict:
    """The real conf/ composed for a tiny run of `method` on synthetic `modalities` (a fresh dict):
    `TINY_SETTINGS` plus these sizes; `settings` sets any other setting by dotted path
    (`**{"dataset.seed": 1}`)."""
    from fed_uml.federated.config import compose_config

    return compose_config([f"method={method}"], {
        **TINY_SETTINGS, "training.epochs": epochs, "dataset.modalities": list(modalities),
        "dataset.samples_per_class": samples_per_class, "dataset.test_samples_per_class": test_samples_per_class,
        "dataset.image_size": image_size, **settings})


def tiny_dataset_cfg(modalities=("sar", "rgb"), samples_per_class=3, test_samples_per_class=2, image_size=16,
                     seed=0) -> dict:
    """The `dataset` settings of `tiny_config`, with the data's own seed."""
    return tiny_config(modalities=modalities, samples_per_class=samples_per_class,
                       test_samples_per_class=test_samples_per_class, image_size=image_size,
                       **{"dataset.seed": seed})["dataset"]


@pytest.fixture
def flower_runtime(tmp_path):
    """A private Flower installation for one test; asserts that nothing is left running and
    that the user's ~/.flwr is not touched."""
    from localrun.flower import FlowerRuntime, find_strays

    home_flwr = Path.home() / ".flwr"
    before = _tree_state(home_flwr)
    with FlowerRuntime(tmp_path / "flower") as rt:
        yield rt
    assert not find_strays(tmp_path), "processes of the Flower runtime outlived it"
    assert _tree_state(home_flwr) == before, "the test wrote under ~/.flwr"


def _tree_state(path: Path):
    if not path.exists():
        return None
    return sorted((str(p), p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.fixture
def optimizer_steps(monkeypatch):
    """The optimiser steps the training loop actually takes: one count per optimiser it makes
    (per model trained), in order."""
    from fed_uml.training import loop

    counts: list[int] = []
    make = loop.make_optimizer

    def counting(params, settings):
        opt = make(params, settings)
        counts.append(0)
        index, step = len(counts) - 1, opt.step

        def counted(*a, **k):
            counts[index] += 1
            return step(*a, **k)

        opt.step = counted
        return opt

    monkeypatch.setattr(loop, "make_optimizer", counting)
    return counts
