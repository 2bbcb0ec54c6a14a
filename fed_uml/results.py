"""The `results.json` schema shared by centralized and federated runs, written atomically.

Schema (keys every results file has):
    method, dataset, seed, federated (bool), modalities -> {modality: {accuracy,
    accuracy_before_calibration, accuracy_after_calibration, n_train, n_test}},
    mean_accuracy, config (the resolved config), wall_seconds, created (UTC ISO time).
Multi-label runs (`dataset.task=multi_label`, `fed_uml.metrics`) carry, instead of the three
accuracies, each of the task's metrics M in `map_macro, map_micro, f1_macro` as M (the deployed
model's), M_before_calibration and M_after_calibration, and `mean_map_macro` instead of
`mean_accuracy`; every results file says its `task` and its `primary_metric`.
Federated runs add `history` (per round), `institutions` (per institution) and `timing` (server start,
start of the first round as Unix times, calibration seconds: what the benchmarks read).
Every run lists the files it wrote in `files`: {path relative to the results folder (POSIX):
{"sha256": hex, "bytes": n}} (`file_record`), so a model file can be matched to the run that
made it (`recorded_digest`) and files of different runs are never taken for one run's.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RESULTS_FILENAME = "results.json"
SCHEMA_KEYS = ("method", "dataset", "seed", "federated", "modalities", "config", "wall_seconds")

# The tasks (`dataset.task`) and the metrics each reports, in the order results and tables show
# them (computed by `fed_uml.metrics`).
TASKS = ("single_label", "multi_label")
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "single_label": ("accuracy",),
    "multi_label": ("map_macro", "map_micro", "f1_macro"),
}
# The headline metric of a task: `mean_<metric>` in results.json, the tables' default.
PRIMARY_METRIC = {"single_label": "accuracy", "multi_label": "map_macro"}
CALIBRATION_SUFFIXES = ("_before_calibration", "_after_calibration")


def check_task(task: str, setting: str = "dataset.task") -> str:
    """`task` if it is one of `TASKS`; otherwise an error naming the setting."""
    if task not in TASKS:
        raise ValueError(f"setting {setting} must be one of {TASKS}, got {task!r}")
    return task


def task_of_entry(entry: Mapping[str, Any]) -> str:
    """The task of one per-modality results entry, from the metrics it holds."""
    return "multi_label" if "map_macro" in entry else "single_label"


def entry_metrics(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """Every metric key of a per-modality entry: M, M_before_calibration, M_after_calibration per metric."""
    return tuple(f"{m}{s}" for m in TASK_METRICS[task_of_entry(entry)] for s in ("", *CALIBRATION_SUFFIXES))


def mean_metric(entries: list[Mapping[str, Any]], metric: str) -> float:
    """The plain mean of `metric` over per-modality entries (NaN if none)."""
    values = [float(e[metric]) for e in entries]
    return sum(values) / len(values) if values else math.nan


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text so that a crash never leaves a half-written file: temp file, fsync, rename.

    Readers (a resumed run, `predict --require-recorded`, a sweep's collector) see either the
    old file or the whole new one, never a torn write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """`payload` as indented JSON, written atomically (`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_jsonable))


# What a run leaves in its results folder (glob patterns): a folder holding any of them holds a run.
RUN_OUTPUTS = (RESULTS_FILENAME, "checkpoint.pt", "model-*.pt", "backbone.pt", "curves.png", "institutions")


def outputs_in(results_dir: str | Path) -> list[Path]:
    """The outputs of a run (`RUN_OUTPUTS`) that `results_dir` holds, sorted."""
    folder = Path(results_dir)
    if not folder.is_dir():
        return []
    return sorted({p for pattern in RUN_OUTPUTS for p in folder.glob(pattern)})


def claim_results_dir(results_dir: str | Path, *, setting: str, resume: bool, overwrite: bool | None = False) -> None:
    """Refuse a results folder that holds another run's outputs, so that two runs never mix.

    The one rule of centralized and federated runs: a folder with any of `RUN_OUTPUTS` is
    refused, unless `resume` (a stopped run continues in it; a finished one, with its
    results.json, cannot) or `overwrite` (those outputs are deleted first, nothing else;
    None where the entry point has no such setting).
    """
    import shutil

    from fed_uml.errors import SettingsError

    folder = Path(results_dir)
    found = outputs_in(folder)
    if not found:
        return
    names = ", ".join(p.name for p in found)
    if resume and not overwrite:
        if (folder / RESULTS_FILENAME).exists():
            raise SettingsError(f"{folder / RESULTS_FILENAME} exists: the run in {setting}={folder} finished, there "
                                f"is nothing to resume; choose another {setting}")
        return
    if overwrite:
        for p in found:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return
    ways = f"; choose another {setting} (earlier results are never overwritten)" + (
        ", resume=true to continue a stopped run in it, or overwrite=true to replace them" if overwrite is not None
        else " or resume=true to continue a stopped run in it")
    raise SettingsError(f"{folder} holds the outputs of another run ({names}){ways}")


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_record(results_dir: str | Path, paths: Iterable[str | Path]) -> dict[str, dict[str, str | int]]:
    """`results.json["files"]` for `paths` (files under `results_dir`): {relative POSIX path: {sha256, bytes}}."""
    root = Path(results_dir).resolve()
    out: dict[str, dict[str, str | int]] = {}
    for p in paths:
        p = Path(p).resolve()
        out[p.relative_to(root).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def recorded_digest(path: str | Path, levels: int = 3) -> tuple[Path | None, str | None]:
    """The results.json that lists `path` among its `files` and the SHA-256 it recorded for it.

    Looks in the file's folder and up to `levels` folders above it (a federated institution's
    model lies in `<results>/institutions/<name>/`). Returns (the nearest results.json found,
    the recorded digest or None when that results.json does not list the file); (None, None)
    when there is no results.json.
    """
    path = Path(path).resolve()
    nearest = None
    for folder in list(path.parents)[: levels + 1]:
        candidate = folder / RESULTS_FILENAME
        if not candidate.is_file():
            continue
        nearest = nearest or candidate
        try:
            files = json.loads(candidate.read_text()).get("files") or {}
        except (OSError, ValueError, AttributeError):
            continue
        entry = files.get(path.relative_to(folder).as_posix())
        if isinstance(entry, Mapping) and "sha256" in entry:
            return candidate, str(entry["sha256"])
    return nearest, None


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def make_results(
    method: str,
    dataset: str,
    seed: int,
    federated: bool,
    modalities: Mapping[str, Mapping[str, Any]],
    config: Mapping[str, Any],
    wall_seconds: float,
    **extra: Any,
) -> dict[str, Any]:
    """The results.json of a run: metrics per modality, their means, the config and the wall time."""
    tasks = {task_of_entry(m) for m in modalities.values()} or {"single_label"}
    if len(tasks) != 1:
        raise ValueError(f"the modalities report the metrics of different tasks: {sorted(tasks)}")
    task = tasks.pop()
    primary = PRIMARY_METRIC[task]
    return {
        "method": method,
        "dataset": dataset,
        "seed": int(seed),
        "federated": bool(federated),
        "modalities": {k: dict(v) for k, v in modalities.items()},
        f"mean_{primary}": mean_metric(list(modalities.values()), primary),
        "task": task,
        "primary_metric": primary,
        "config": dict(config),
        "wall_seconds": float(wall_seconds),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def modality_result(before: float | Mapping[str, float], after: float | Mapping[str, float], calibrated: bool,
                    n_train: int, n_test: int, **extra: Any) -> dict[str, Any]:
    """One modality's entry of `results.json["modalities"]`, for centralized and federated runs alike.

    `before` and `after` are the accuracy (single-label) or the task's metrics {name: value}
    (`TASK_METRICS`) with the training-time BN statistics and after calibration.
    Each metric M gives M (the deployed model's: after calibration when the method deploys
    h_k), M_before_calibration and M_after_calibration.
    """
    if not isinstance(before, Mapping) and not isinstance(after, Mapping):
        before, after = {"accuracy": before}, {"accuracy": after}
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        raise ValueError(f"modality_result needs `before` and `after` both as accuracies or both as metrics "
                         f"{{name: value}}, got {before!r} and {after!r}")
    names = [m for task in TASK_METRICS.values() for m in task if m in before]
    if set(names) != set(before) or set(before) != set(after) or not any(
            tuple(names) == task for task in TASK_METRICS.values()):
        raise ValueError(f"modality_result needs the metrics of one task {dict(TASK_METRICS)}, got "
                         f"{sorted(before)} and {sorted(after)}")
    out = {}
    for m in names:
        out[m] = float(after[m] if calibrated else before[m])
        out[f"{m}_before_calibration"] = float(before[m])
        out[f"{m}_after_calibration"] = float(after[m])
    return {**out, "n_train": int(n_train), "n_test": int(n_test), **extra}


def read_results(path: str | Path) -> dict[str, Any]:
    """Read results.json at `path`; a file that lacks the schema's keys is an error naming them."""
    path = Path(path)
    with open(path) as f:
        data = json.load(f)
    missing = [k for k in SCHEMA_KEYS if k not in data]
    primary = data.get("primary_metric", "accuracy")
    if f"mean_{primary}" not in data:
        missing.append(f"mean_{primary}")
    if missing:
        raise ValueError(f"{path}: not a fed-uml results file (missing {missing})")
    return data
