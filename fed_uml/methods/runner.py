"""What every method shares: its training settings, its model, and how it is evaluated and deployed.

A method gets the composed config as plain containers (it goes into the model files it writes)
and reads its settings from it as typed objects (`fed_uml.schema.settings_of`):
- `train_settings(cfg)`: the `training` config group (seed and device from the top level);
- `build_model(cfg["model"], data)`: the configured architecture, one projection per modality;
- `evaluate_with_calibration(model, data, cfg)`: each modality's test metrics (accuracy, or
  mAP and F1 for multi-label data, `fed_uml.metrics`) with the
  training-time BN statistics and after BN calibration (Algorithm 1), as
  `fed_uml.results.modality_result` entries. Whether the calibrated h_k is the deployed model
  is read only from the method's settings (`method.calibrate`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from fed_uml.calibration import CalibratedModel, calibrate
from fed_uml.modality import ModalityData
from fed_uml.model_file import save_deployed_models
from fed_uml.models import UMLModel, model_from_config
from fed_uml.results import modality_result
from fed_uml.schema import settings_of
from fed_uml.training import TrainSettings, evaluate_task

log = logging.getLogger(__name__)


def train_settings(cfg: Mapping[str, Any]) -> TrainSettings:
    """The checked training settings of the run `cfg` (the `training` group, its seed and device)."""
    return TrainSettings.of(settings_of(cfg))


def build_model(model_cfg: Mapping[str, Any], data: Mapping[str, ModalityData]) -> UMLModel:
    """The configured architecture with one projection per modality in `data`."""
    num_classes = next(iter(data.values())).num_classes
    return model_from_config(model_cfg, {k: d.channels for k, d in data.items()}, num_classes)


def calibrate_from_config(model: UMLModel, images: Mapping[str, torch.Tensor],
                          cfg: Mapping[str, Any]) -> dict[str, CalibratedModel]:
    """Algorithm 1 for every modality in `images` with the `calibration` config group's settings."""
    settings = settings_of(cfg)
    return calibrate(model, images, epochs=settings.calibration.epochs, batch_size=settings.calibration.batch_size,
                     device=settings.device)


def evaluate_with_calibration(model: UMLModel, data: Mapping[str, ModalityData],
                              cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The task's metrics per modality with training-time BN statistics and after Algorithm 1.

    With `cfg["results_dir"]` set, also writes each modality's deployed model there
    (`fed_uml.model_file`).
    """
    settings = settings_of(cfg)
    use_calibrated, device = settings.method.calibrate, settings.device
    calibrated = calibrate_from_config(model, {k: d.train.images for k, d in data.items()}, cfg)
    out = {}
    for k, d in data.items():
        before = evaluate_task(model, d.test, k, device=device)
        after = evaluate_task(calibrated[k], d.test, device=device)
        out[k] = modality_result(before, after, use_calibrated, len(d.train), len(d.test))
    if settings.results_dir:  # the deployed model of every modality: results_dir/model-<modality>.pt
        for path in save_deployed_models(settings.results_dir, model, calibrated, data, cfg, use_calibrated):
            log.info("wrote %s", path)
    return out
