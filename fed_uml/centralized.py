"""The centralized runner: load the data, run the configured method, write results.json and the models."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from fed_uml.data import load_dataset
from fed_uml.methods import get_method
from fed_uml.results import TASK_METRICS, make_results, task_of_entry, write_json_atomic

log = logging.getLogger(__name__)


def check_settings(cfg: Mapping) -> None:
    """Refuse settings that would otherwise fail deep inside torch/numpy (or silently train nothing)."""
    import math

    for name, value in (("seed", cfg.get("seed")), ("dataset.seed", cfg["dataset"].get("seed"))):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    width = cfg["model"].get("width")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise ValueError(f"model.width must be an integer >= 1, got {width!r}")
    lr = cfg.get("training", {}).get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"training.lr must be a finite number > 0, got {lr!r}")
    try:
        torch.device(cfg.get("device") or "cpu")
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device={cfg.get('device')!r} is not a torch device (cpu, cuda, cuda:0, ...): {e}") from None


def run_centralized(cfg: Mapping, results_dir: str | Path | None = None) -> dict:
    """Run `cfg["method"]["name"]` on `cfg["dataset"]`; write `results.json` and the deployed models
    (`model-<modality>.pt`) into `results_dir`, or else into `cfg["results_dir"]` (models only), if set.

    `cfg` is the resolved config as plain containers (what Hydra's `to_container` gives).
    """
    t0 = time.perf_counter()
    check_settings(cfg)
    if results_dir is not None:  # the deployed models (model-<modality>.pt) go beside results.json
        cfg = {**cfg, "results_dir": str(results_dir)}
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
        for metric in TASK_METRICS[task_of_entry(m)]:
            log.info(
                "%s: %s %.4f (before calibration %.4f, after %.4f)", k, metric, m[metric],
                m[f"{metric}_before_calibration"], m[f"{metric}_after_calibration"],
            )
    if results_dir is not None:
        path = write_json_atomic(Path(results_dir) / "results.json", results)
        log.info("wrote %s", path)
    return results
