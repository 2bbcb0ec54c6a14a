"""Every setting checked once, before any data is read or any step is taken.

Why one pass up front: a setting that fails late fails after the work it wasted (training
for minutes, then a negative calibration epoch count or a results folder that cannot be
written), and a value that is silently ignored (a negative thread count) is worse. Each check
raises `SettingsError` with the setting's name and what to change. Names and types are the
schema's to check (`fed_uml.schema.settings_of`: an unknown setting or a value of the wrong
type is refused there, by name); this module checks ranges, choices and the machine. The
data-dependent check (does the data the settings ask for fit in memory?) lives with the data
(`fed_uml.data.memory`) and runs before a pixel is read; this module never touches data, so
the ServerApp can use it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fed_uml.errors import SettingsError
from fed_uml.metrics import decision_settings
from fed_uml.schema import Settings, settings_of
from fed_uml.training import TrainSettings


def _at_least(value: int, name: str, minimum: int, hint: str = "") -> None:
    if value < minimum:
        raise SettingsError(f"{name} must be an integer >= {minimum}{hint}, got {value!r}")


def check_common(cfg: Mapping[str, Any] | Settings, *, device: bool = True) -> Settings:
    """The settings every run reads.

    Names and types (the schema), seeds, model width, training, calibration, threads, decision and
    (`device=True`, where the work runs) the torch device. Returns the typed settings.
    """
    s = cfg if isinstance(cfg, Settings) else settings_of(cfg)
    _at_least(s.seed, "seed", 0)
    _at_least(s.dataset.seed, "dataset.seed", 0)
    width = getattr(s.model, "width", None)
    if width is not None:
        _at_least(width, "model.width", 1)
    if not (math.isfinite(s.training.lr) and s.training.lr > 0):
        raise SettingsError(f"training.lr must be a finite number > 0, got {s.training.lr!r}")
    for key in ("epochs", "batch_size", "checkpoint_every", "log_every"):
        _at_least(getattr(s.training, key), f"training.{key}", 0)
    TrainSettings.of(s)
    _at_least(s.calibration.epochs, "calibration.epochs", 1, " (passes over the data in Algorithm 1)")
    _at_least(s.calibration.batch_size, "calibration.batch_size", 2, " (BatchNorm needs two images per batch)")
    _at_least(s.num_threads, "num_threads", 0, " (0: torch's default)")
    decision_settings(s.decision)
    if device:
        check_device(s.device)
    return s


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


def check_centralized(cfg: Mapping[str, Any] | Settings, results_dir: str | Path | None) -> Settings:
    """The settings of `python -m experiments.run` (and every script that runs centralized jobs).

    Returns them typed.
    """
    s = check_common(cfg)
    _at_least(s.training.epochs, "training.epochs", 1)
    if s.resume and s.overwrite:
        raise SettingsError("resume=true and overwrite=true contradict each other: choose one")
    check_writable_dir(results_dir, "results_dir")
    return s


def check_federated(cfg: Mapping[str, Any] | Settings, results_dir: str | Path | None, *,
                    device: bool = False) -> Settings:
    """The settings of a federated run, as the ServerApp sees them; returns them typed.

    The device is the institutions' to check: `device=False` on the server.
    """
    s = check_common(cfg, device=device)
    fed = s.federated
    _at_least(fed.num_rounds, "federated.num_rounds", 1, " (run-config num-server-rounds)")
    _at_least(fed.local_steps, "federated.local_steps", 0, " (run-config local-steps; 0: local-epochs decide)")
    if not fed.local_steps:
        _at_least(fed.local_epochs, "federated.local_epochs", 1, " (run-config local-epochs), or set local-steps")
    else:
        _at_least(fed.local_epochs, "federated.local_epochs", 0, " (run-config local-epochs)")
    if not 0 <= fed.weighting_mix <= 1:  # also refuses NaN
        raise SettingsError(f"federated.weighting_mix (run-config weighting-mix) must lie in [0, 1], "
                            f"got {fed.weighting_mix!r}")
    check_writable_dir(results_dir, "results-dir")
    return s
