"""Helpers for tests that drive the Flower runtime."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from flwr.app import Context, Message, Metadata, RecordDict

TINY = ("model.width=8 dataset.samples_per_class=4 dataset.test_samples_per_class=3 dataset.image_size=16"
        " training.batch_size=8")
# What `flwr run` computed for tests/test_flower_runtime.py::test_same_seed_same_metrics_as_before_the_scale_work
GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "simulation-8-institutions.json"


def message(content: RecordDict, message_type: str, dst_node_id: int = 1) -> Message:
    """A Message as a node receives it (explicit metadata: no runtime needed)."""
    md = Metadata(run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=0, dst_node_id=dst_node_id,
                  reply_to_message_id="", group_id="", created_at=time.time(), ttl=3600.0,
                  message_type=message_type)
    return Message(content=content, metadata=md)


def context(run_config: dict, node_config: dict, state: RecordDict | None = None) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=state or RecordDict(), run_config=run_config)


def read_audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_metrics(results: dict) -> dict:
    """What a run computed (not how long it took): per-modality results, per-round metrics and
    participants, each institution's accuracy before and after calibration."""
    return {
        "modalities": results["modalities"],
        "history": [{k: v for k, v in h.items() if "/" in k or k in ("round", "participants")}
                    for h in results["history"]],
        "institutions": sorted([i["name"], i["accuracy_before_calibration"], i["accuracy_after_calibration"]]
                               for i in results["institutions"]),
    }


def assert_same_metrics(got, want, where: str = "", rel: float = 1e-4) -> None:
    """Equal structure, counts and names; floats within `rel` (default 1e-4) relative: another
    CPU or a rebuilt environment moves the last bits of float32 training (round 1's losses by
    ~1e-7, round 2's by ~1e-5 here), while a real change of what is computed (another
    institution's data, another sample, another averaging) moves losses and accuracies by far
    more. `rel=0`: equal bit for bit (two runs on one machine, one environment)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), (where, sorted(got), sorted(want))
        for k in want:
            assert_same_metrics(got[k], want[k], f"{where}.{k}", rel)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_metrics(g, w, f"{where}[{i}]", rel)
    elif isinstance(want, float):
        assert (got == want) if rel == 0 else (got == pytest.approx(want, rel=rel)), (where, got, want)
    else:
        assert got == want, (where, got, want)
