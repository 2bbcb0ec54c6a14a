"""The centralized runner.

Check the settings, load the data, run the configured method, write results.json and the models.

A run owns its results folder: one that holds another run's outputs is refused
(`fed_uml.results.claim_results_dir`, the same rule as a federated run), so the outputs of two
runs never mix; `resume=true` continues a killed run from its training checkpoint
(`fed_uml.training.checkpoint`), `overwrite=true` deletes the earlier outputs first.
results.json is written last and lists every file the run wrote with its SHA-256.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fed_uml.data import load_dataset
from fed_uml.files import settings_digest
from fed_uml.methods import get_method
from fed_uml.model_file import model_filename
from fed_uml.preflight import check_centralized
from fed_uml.results import (
    RESULTS_FILENAME,
    TASK_METRICS,
    claim_results_dir,
    file_record,
    make_results,
    task_of_entry,
    write_json_atomic,
)
from fed_uml.schema import settings_of
from fed_uml.training.checkpoint import TrainingCheckpoints, checkpointing

log = logging.getLogger(__name__)

CHECKPOINT_FILENAME = "checkpoint.pt"
# Settings that may change between a killed run and its resumption (they change no result,
# except num_threads, which changes the order of float sums and so the last bits).
RESUME_FREE = ("results_dir", "resume", "overwrite", "num_threads", "training.log_every",
               "training.checkpoint_every")


def run_centralized(cfg: Mapping[str, Any], results_dir: str | Path | None = None) -> dict[str, Any]:
    """Run `cfg["method"]["name"]` on `cfg["dataset"]`.

    Write `results.json` and the deployed models (`model-<modality>.pt`) into `results_dir`, or else
    into `cfg["results_dir"]` (models only), if set.

    `cfg` is the resolved config as plain containers (what Hydra's `to_container` gives); it is
    read as typed settings (`fed_uml.schema.settings_of`) and every setting is checked before
    any data is read (`fed_uml.preflight`). The plain config goes to the method and into
    results.json as it is.
    """
    t0 = time.perf_counter()
    if results_dir is not None:  # the deployed models (model-<modality>.pt) go beside results.json
        cfg = {**cfg, "results_dir": str(results_dir)}
    settings = settings_of(cfg)
    folder = Path(settings.results_dir).expanduser() if settings.results_dir else None
    check_centralized(settings, folder)
    method = settings.method.name
    fn = get_method(method)  # fail on an unknown method before loading any data
    ckpt = None
    if folder is not None:
        claim_results_dir(folder, setting="results_dir", resume=settings.resume, overwrite=settings.overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        ckpt = TrainingCheckpoints.open(folder / CHECKPOINT_FILENAME, settings.training.checkpoint_every,
                                        settings_digest(cfg, RESUME_FREE), settings.resume)
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    data = load_dataset(cfg["dataset"])
    log.info(
        "%s on %s: %s", method, settings.dataset.name,
        ", ".join(f"{k} ({d.channels} bands, {len(d.train)} train / {len(d.test)} test)" for k, d in data.items()),
    )
    with checkpointing(ckpt):
        per_modality = fn(data, cfg)
    for k, m in per_modality.items():
        for metric in TASK_METRICS[task_of_entry(m)]:
            log.info(
                "%s: %s %.4f (before calibration %.4f, after %.4f)", k, metric, m[metric],
                m[f"{metric}_before_calibration"], m[f"{metric}_after_calibration"],
            )
    files = {}
    if folder is not None:
        files = file_record(folder, [folder / model_filename(k) for k in per_modality
                                     if (folder / model_filename(k)).is_file()])
    results = make_results(method, settings.dataset.name, settings.seed, False, per_modality, cfg,
                           time.perf_counter() - t0, files=files)
    if results_dir is not None:
        path = write_json_atomic(Path(results_dir) / RESULTS_FILENAME, results)
        log.info("wrote %s", path)
    if ckpt is not None:  # a finished run has nothing to resume
        ckpt.path.unlink(missing_ok=True)
    return results
