"""Centralized experiments: load the data, run the configured method, write results.json."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from fed_uml.data import load_dataset
from fed_uml.methods import get_method
from fed_uml.results import make_results, write_json_atomic

log = logging.getLogger(__name__)


def run_centralized(cfg: Mapping, results_dir: str | Path | None = None) -> dict:
    """Run `cfg["method"]["name"]` on `cfg["dataset"]`; write `results.json` when a directory is given.

    `cfg` is the resolved config as plain containers (what Hydra's `to_container` gives).
    """
    t0 = time.perf_counter()
    threads = int(cfg.get("num_threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    method = cfg["method"]["name"]
    fn = get_method(method)  # fail on an unknown method before loading any data
    data = load_dataset(cfg["dataset"])
    log.info(
        "%s on %s: %s", method, cfg["dataset"]["name"],
        ", ".join(f"{k} ({d.channels} bands, {len(d.train)} train / {len(d.test)} test)" for k, d in data.items()),
    )
    per_modality = fn(data, cfg)
    results = make_results(
        method, cfg["dataset"]["name"], cfg["seed"], False, per_modality, cfg, time.perf_counter() - t0
    )
    for k, m in per_modality.items():
        log.info(
            "%s: accuracy %.4f (before calibration %.4f, after %.4f)",
            k, m["accuracy"], m["accuracy_before_calibration"], m["accuracy_after_calibration"],
        )
    if results_dir is not None:
        path = write_json_atomic(Path(results_dir) / "results.json", results)
        log.info("wrote %s", path)
    return results
