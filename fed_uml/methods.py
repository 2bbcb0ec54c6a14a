"""Method registry: `method=<name>` picks how models are trained and deployed per modality.

A method takes the loaded modalities and the resolved config and returns, per modality,
the test accuracy of the deployed model before and after BN calibration. UML and the
unimodal baseline live here; the compared methods register from `fed_uml.baselines`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch

from fed_uml.calibration import calibrate
from fed_uml.modality import ArrayDataset, ModalityData
from fed_uml.models import UMLModel, create_model
from fed_uml.training import TrainSettings, evaluate, train_unpaired
from fed_uml.training.loop import epoch_steps
from fed_uml.training.seed import seed_everything

log = logging.getLogger(__name__)

MethodFn = Callable[[Mapping[str, ModalityData], Mapping], dict[str, dict]]
_METHODS: dict[str, MethodFn] = {}


def register_method(name: str) -> Callable[[MethodFn], MethodFn]:
    def decorator(fn: MethodFn) -> MethodFn:
        _METHODS[name] = fn
        return fn

    return decorator


def get_method(name: str) -> MethodFn:
    from fed_uml import baselines  # noqa: F401  (registers the compared methods)

    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r} (setting method=...); available: {available_methods()}")
    return _METHODS[name]


def available_methods() -> list[str]:
    from fed_uml import baselines  # noqa: F401

    return sorted(_METHODS)


def build_model(model_cfg: Mapping, data: Mapping[str, ModalityData]) -> UMLModel:
    """The configured architecture with one projection per modality in `data`."""
    cfg = dict(model_cfg)
    name = cfg.pop("backbone")
    specific = int(cfg.pop("specific_layers", 1))
    num_classes = next(iter(data.values())).num_classes
    return create_model(name, {k: d.channels for k, d in data.items()}, num_classes, specific, **cfg)


def train_settings(cfg: Mapping) -> TrainSettings:
    return TrainSettings.from_config(cfg["training"], seed=int(cfg["seed"]), device=str(cfg.get("device", "cpu")))


def evaluate_with_calibration(model: UMLModel, data: Mapping[str, ModalityData], cfg: Mapping,
                              use_calibrated: bool) -> dict[str, dict]:
    """Accuracy per modality with training-time BN statistics and after Algorithm 1; with
    `cfg["results_dir"]` set, also writes each modality's deployed model there (`fed_uml.model_file`)."""
    cal_cfg = cfg.get("calibration", {}) or {}
    device = str(cfg.get("device", "cpu"))
    calibrated = calibrate(
        model,
        {k: d.train.images for k, d in data.items()},
        epochs=int(cal_cfg.get("epochs", 1)),
        batch_size=int(cal_cfg.get("batch_size", 64)),
        device=device,
    )
    out = {}
    for k, d in data.items():
        before = evaluate(model, d.test, k, device=device)
        after = evaluate(calibrated[k], d.test, device=device)
        out[k] = {
            "accuracy": after if use_calibrated else before,
            "accuracy_before_calibration": before,
            "accuracy_after_calibration": after,
            "n_train": len(d.train),
            "n_test": len(d.test),
        }
    if cfg.get("results_dir"):  # the deployed model of every modality: results_dir/model-<modality>.pt
        from fed_uml.model_file import save_deployed_models

        for path in save_deployed_models(cfg["results_dir"], model, calibrated, data, cfg, use_calibrated):
            log.info("wrote %s", path)
    return out


def _calibrate_flag(cfg: Mapping, default: bool) -> bool:
    return bool(cfg["method"].get("calibrate", default))


@register_method("uml")
def run_uml(data: Mapping[str, ModalityData], cfg: Mapping) -> dict[str, dict]:
    """UML: one model, a projection per modality, the shared backbone trained on all of them."""
    settings = train_settings(cfg)
    g = seed_everything(settings.seed)
    model = build_model(cfg["model"], data)
    history = train_unpaired(model, {k: d.train for k, d in data.items()}, settings, generator=g, desc="uml")
    out = evaluate_with_calibration(model, data, cfg, _calibrate_flag(cfg, True))
    for k in out:
        out[k]["optimizer_steps"] = sum(r["steps"] for r in history)
    return out


UNIMODAL_BUDGETS = ("matched", "epochs")


def unimodal_steps_per_epoch(data: Mapping[str, ModalityData], cfg: Mapping) -> int | None:
    """Optimiser steps per epoch of each unimodal model under `method.budget`.

    `matched` (default): the steps modality k gets inside the joint UML run on the same data,
    one pass over the LARGEST modality per epoch, so that method and baseline take the same
    number of optimiser steps (batches of B from D_k) per modality. `epochs`: one pass over
    D_k's own data per epoch, which gives a small modality up to n_max / n_k times fewer
    steps alone than inside UML (None: the loop's default).
    """
    budget = str(cfg["method"].get("budget", "matched"))
    if budget not in UNIMODAL_BUDGETS:
        raise ValueError(f"method.budget must be one of {UNIMODAL_BUDGETS}, got {budget!r}")
    if budget == "epochs":
        return None
    return epoch_steps({k: d.train for k, d in data.items()}, int(cfg["training"]["batch_size"]))


@register_method("unimodal")
def run_unimodal(data: Mapping[str, ModalityData], cfg: Mapping) -> dict[str, dict]:
    """The baseline: the same architecture and optimiser steps, one model per modality, trained alone."""
    settings = train_settings(cfg)
    steps = unimodal_steps_per_epoch(data, cfg)
    out = {}
    for k, d in data.items():
        g = seed_everything(settings.seed)
        model = build_model(cfg["model"], {k: d})
        history = train_unpaired(model, {k: d.train}, settings, generator=g, desc=f"unimodal {k}",
                                 steps_per_epoch=steps)
        out.update(evaluate_with_calibration(model, {k: d}, cfg, _calibrate_flag(cfg, False)))
        out[k]["optimizer_steps"] = sum(r["steps"] for r in history)
    return out


@register_method("pooled")
def run_pooled(data: Mapping[str, ModalityData], cfg: Mapping) -> dict[str, dict]:
    """The positive control's upper reference: one model on the UNION of the modalities' data.

    Only meaningful when the "modalities" are one sensor split in parts (equal bands): then
    UML on the parts should approach this model, which sees all the data through one
    projection. An epoch is one pass over the pooled data; each part's test set is scored.
    """
    bands = {k: tuple(d.band_names) for k, d in data.items()}
    if len(set(bands.values())) != 1 or len({d.channels for d in data.values()}) != 1:
        raise ValueError(f"method=pooled needs modalities of one sensor with the same bands; got {bands}")
    settings = train_settings(cfg)
    g = seed_everything(settings.seed)
    first = next(iter(data.values()))
    train = ArrayDataset(torch.cat([d.train.images for d in data.values()]),
                         torch.cat([d.train.labels for d in data.values()]))
    pooled = ModalityData("pooled", train, train, first.class_names, first.band_names, dict(first.info))
    model = build_model(cfg["model"], {"pooled": pooled})
    history = train_unpaired(model, {"pooled": train}, settings, generator=g, desc="pooled")
    cal_cfg = cfg.get("calibration", {}) or {}
    device = str(cfg.get("device", "cpu"))
    calibrated = calibrate(model, {"pooled": train.images}, epochs=int(cal_cfg.get("epochs", 1)),
                           batch_size=int(cal_cfg.get("batch_size", 64)), device=device)["pooled"]
    use_calibrated = _calibrate_flag(cfg, False)
    out = {}
    for k, d in data.items():
        before = evaluate(model, d.test, "pooled", device=device)
        after = evaluate(calibrated, d.test, device=device)
        out[k] = {
            "accuracy": after if use_calibrated else before,
            "accuracy_before_calibration": before,
            "accuracy_after_calibration": after,
            "n_train": len(train),
            "n_test": len(d.test),
            "optimizer_steps": sum(r["steps"] for r in history),
        }
    return out
