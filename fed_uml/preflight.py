"""Every setting checked once, before any data is read or any step is taken.

Why one pass up front: a setting that fails late fails after the work it wasted (training
for minutes, then a negative calibration epoch count or a results folder that cannot be
written), and a value that is silently ignored (a negative thread count) is worse. Each check
raises `SettingsError` with the setting's name and what to change. The data-dependent check
(does the data the settings ask for fit in memory?) lives with the data
(`fed_uml.data.memory`) and runs before a pixel is read; this module never touches data, so
the ServerApp can use it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from fed_uml.errors import SettingsError
from fed_uml.metrics import DecisionSettings
from fed_uml.training import TrainSettings


def _int(cfg: Mapping, name: str, minimum: int, hint: str = "") -> int:
    value = cfg.get(name.rsplit(".", 1)[-1])
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingsError(f"{name} must be an integer >= {minimum}{hint}, got {value!r}")
    return value


def check_common(cfg: Mapping, *, device: bool = True) -> None:
    """The settings every run reads: seeds, model width, training, calibration, threads and
    (`device=True`, where the work runs) the torch device."""
    for name, node, key in (("seed", cfg, "seed"), ("dataset.seed", cfg.get("dataset") or {}, "seed")):
        value = node.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise SettingsError(f"{name} must be an integer >= 0, got {value!r}")
    width = (cfg.get("model") or {}).get("width")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise SettingsError(f"model.width must be an integer >= 1, got {width!r}")
    training = dict(cfg.get("training") or {})
    lr = training.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr)
                               and lr > 0):
        raise SettingsError(f"training.lr must be a finite number > 0, got {lr!r}")
    for key in ("epochs", "batch_size", "checkpoint_every", "log_every"):
        if key in training:
            _int(training, f"training.{key}", 0)
    try:
        TrainSettings.from_config(training)
    except (ValueError, TypeError) as e:
        raise SettingsError(str(e)) from None
    calibration = cfg.get("calibration") or {}
    _int(calibration, "calibration.epochs", 1, " (passes over the data in Algorithm 1)")
    _int(calibration, "calibration.batch_size", 2, " (BatchNorm needs two images per batch)")
    _int(cfg, "num_threads", 0, " (0: torch's default)")
    DecisionSettings.from_config(cfg)
    if device:
        check_device(cfg.get("device") or "cpu")


def check_device(name: str, setting: str = "device") -> None:
    """`name` is a torch device that exists here."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as e:
        raise SettingsError(f"{setting}={name!r} is not a torch device (cpu, cuda, cuda:0, mps): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"{setting}={name}: no CUDA device is visible to torch on this machine "
                                "(torch.cuda.is_available() is False); use device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingsError(f"{setting}={name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"{setting}={name}: MPS is not available on this machine; use device=cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise SettingsError(f"{setting}={name}: fed-uml runs on cpu, cuda or mps devices")


def check_writable_dir(path: str | Path | None, setting: str) -> Path | None:
    """`path` is a folder this process can create files in (or can be created); None passes."""
    if path in (None, ""):
        return None
    folder = Path(path).expanduser()
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SettingsError(f"{setting}={folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot be written" if probe == folder else f"cannot be created ({probe} is not writable)"
        raise SettingsError(f"{setting}={folder}: the folder {what}; choose another {setting}")
    return folder


def check_centralized(cfg: Mapping, results_dir: str | Path | None) -> None:
    """The settings of `python -m experiments.run` (and every script that runs centralized jobs)."""
    check_common(cfg)
    _int(cfg.get("training") or {}, "training.epochs", 1)
    for flag in ("resume", "overwrite"):
        if not isinstance(cfg.get(flag, False), bool):
            raise SettingsError(f"{flag} must be true or false, got {cfg.get(flag)!r}")
    if cfg.get("resume") and cfg.get("overwrite"):
        raise SettingsError("resume=true and overwrite=true contradict each other: choose one")
    check_writable_dir(results_dir, "results_dir")


def check_federated(cfg: Mapping, results_dir: str | Path | None, *, device: bool = False) -> None:
    """The settings of a federated run, as the ServerApp sees them (the device is the
    institutions' to check: `device=False` on the server)."""
    check_common(cfg, device=device)
    fed = cfg.get("federated") or {}
    _int(fed, "federated.num_rounds", 1, " (run-config num-server-rounds)")
    epochs, steps = fed.get("local_epochs"), fed.get("local_steps") or 0
    _int(fed, "federated.local_steps", 0, " (run-config local-steps; 0: local-epochs decide)")
    if not steps:
        _int(fed, "federated.local_epochs", 1, " (run-config local-epochs), or set local-steps")
    elif epochs is not None:
        _int(fed, "federated.local_epochs", 0, " (run-config local-epochs)")
    check_writable_dir(results_dir, "results-dir")
