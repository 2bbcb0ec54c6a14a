"""The `results.json` schema shared by centralized and federated runs, written atomically.

Schema (keys every results file has):
    method, dataset, seed, federated (bool), modalities -> {modality: {accuracy,
    accuracy_before_calibration, accuracy_after_calibration, n_train, n_test}},
    mean_accuracy, config (the resolved config), wall_seconds, created (UTC ISO time).
Federated runs add `history` (per round), `institutions` (per institution) and `timing` (server start,
start of the first round as Unix times, calibration seconds: what the benchmarks read).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

SCHEMA_KEYS = ("method", "dataset", "seed", "federated", "modalities", "mean_accuracy", "config", "wall_seconds")


def write_json_atomic(path: str | Path, payload) -> Path:
    """Write JSON so that a crash never leaves a half-written file: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(obj):
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
    modalities: Mapping[str, Mapping],
    config: Mapping,
    wall_seconds: float,
    **extra,
) -> dict:
    accs = [m["accuracy"] for m in modalities.values()]
    return {
        "method": method,
        "dataset": dataset,
        "seed": int(seed),
        "federated": bool(federated),
        "modalities": {k: dict(v) for k, v in modalities.items()},
        "mean_accuracy": sum(accs) / len(accs) if accs else math.nan,
        "config": dict(config),
        "wall_seconds": float(wall_seconds),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def deploys_calibrated(method_cfg: Mapping) -> bool:
    """Whether the method deploys the BN-calibrated h_k (True) or the model as trained.

    Read only from the method's config group (`calibrate` in conf/method/<name>.yaml), so the
    centralized runner, the institutions and the server agree by construction.
    """
    if "calibrate" not in method_cfg:
        raise ValueError(f"method {method_cfg.get('name')!r}: setting method.calibrate is missing "
                         f"(conf/method/{method_cfg.get('name')}.yaml sets it)")
    return bool(method_cfg["calibrate"])


def modality_result(before: float, after: float, calibrated: bool, n_train: int, n_test: int, **extra) -> dict:
    """One modality's entry of `results.json["modalities"]`, for centralized and federated runs alike.

    `accuracy` is the deployed model's: after calibration when the method deploys h_k.
    """
    return {
        "accuracy": float(after if calibrated else before),
        "accuracy_before_calibration": float(before),
        "accuracy_after_calibration": float(after),
        "n_train": int(n_train),
        "n_test": int(n_test),
        **extra,
    }


def read_results(path: str | Path) -> dict:
    path = Path(path)
    with open(path) as f:
        data = json.load(f)
    missing = [k for k in SCHEMA_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: not a fed-uml results file (missing {missing})")
    return data
