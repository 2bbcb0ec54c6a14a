"""The unpaired training loop: every step draws an independent mini-batch from each modality.

Samples of different modalities never correspond; the only thing they share is the label
set. Each modality's losses update its own projection and the shared backbone.

The loss follows the task of the targets (`fed_uml.metrics.task_of`): the cross-entropy for
class indices (N,), the binary cross-entropy on the logits for multi-hot targets (N, C)
(multi-label BigEarthNet), averaged over samples and classes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fed_uml.errors import SettingsError
from fed_uml.metrics import task_metrics, task_of
from fed_uml.modality import ArrayDataset
from fed_uml.schema import Settings, TrainingSettings, typed
from fed_uml.training import checkpoint as checkpoints

log = logging.getLogger(__name__)

FUSIONS = ("separate", "concat")


@dataclass
class TrainSettings(TrainingSettings):
    """The `training` settings with the run's device and seed, which are top-level settings.

    `fed_uml.schema.TrainingSettings` has every field, its default and what it does.

    Why `fusion=separate` and the cosine schedule are the defaults: separate passes give every
    BN layer statistics of one modality at a time, the same per-modality statistics that
    calibration later installs; the cosine decay lets the weights settle, so that the BN running
    averages of the last steps describe the final model.
    """

    device: str = Settings.device
    seed: int = Settings.seed

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **overrides: Any) -> TrainSettings:
        """The checked `training` group `cfg` (schema defaults where absent), with `overrides` (device, seed).

        An unknown key or a wrong type is a `SettingsError` naming it.
        """
        s = cls(**{**dataclasses.asdict(typed(TrainingSettings, cfg, "training.")), **overrides})
        s.validate()
        return s

    @classmethod
    def of(cls, settings: Settings) -> TrainSettings:
        """The checked training settings of a run (`fed_uml.schema.settings_of`)."""
        s = cls(**dataclasses.asdict(settings.training), device=settings.device, seed=settings.seed)
        s.validate()
        return s

    def validate(self) -> None:
        """Refuse an unknown fusion, schedule or optimiser, naming the setting."""
        if self.fusion not in FUSIONS:
            raise SettingsError(f"training.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.schedule not in ("cosine", "constant"):
            raise SettingsError(f"training.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise SettingsError(f"training.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.batch_size < 2:
            raise SettingsError(f"training.batch_size must be >= 2, got {self.batch_size}")
        if self.epochs < 0:
            raise SettingsError(f"training.epochs must be >= 0, got {self.epochs}")
        if self.checkpoint_every < 0:
            raise SettingsError(f"training.checkpoint_every must be >= 0 (0: never), got {self.checkpoint_every}")


def make_optimizer(params: Iterable[nn.Parameter], s: TrainSettings) -> torch.optim.Optimizer:
    """The configured optimiser over the parameters that need gradients."""
    params = [p for p in params if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def augment_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random element of the dihedral group per sample.

    Flips and transposes are label-preserving for overhead imagery, which has no canonical up or
    left.
    """
    n = x.shape[0]
    flips = torch.rand(n, 3, generator=g) < 0.5
    x = torch.where(flips[:, 0].view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(flips[:, 1].view(-1, 1, 1, 1), x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(flips[:, 2].view(-1, 1, 1, 1), x.transpose(-1, -2), x)
    return x


class _Cycler:
    """Endless shuffled mini-batches of one modality (reshuffled at every pass)."""

    def __init__(self, data: ArrayDataset, batch_size: int, g: torch.Generator):
        self.data, self.g = data, g
        self.batch_size = min(batch_size, len(data))
        self.order, self.pos = torch.randperm(len(data), generator=g), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.batch_size > len(self.order):
            self.order, self.pos = torch.randperm(len(self.data), generator=self.g), 0
        idx = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.data.images[idx], self.data.labels[idx]


def epoch_steps(datasets: Mapping[str, ArrayDataset], batch_size: int) -> int:
    """An epoch passes once over the largest modality; smaller ones are cycled."""
    return max(math.ceil(len(d) / batch_size) for d in datasets.values())


def task_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class indices (N,).

    Binary cross-entropy on the logits, averaged over samples and classes, for multi-hot targets (N,
    C).
    """
    if targets.ndim == 2:
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    return F.cross_entropy(logits, targets)


# (model, features, batches) -> loss
LossHook = Callable[[Any, dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]], torch.Tensor]


def train_unpaired(
    model: nn.Module,
    datasets: Mapping[str, ArrayDataset],
    settings: TrainSettings,
    epochs: int | None = None,
    generator: torch.Generator | None = None,
    extra_loss: LossHook | None = None,
    extra_params: list[nn.Parameter] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    desc: str = "train",
    start_epoch: int = 0,
    total_epochs: int | None = None,
    steps_per_epoch: int | None = None,
) -> list[dict[str, Any]]:
    """Train `model` (a UMLModel or anything with `forward(x, modality)`) on unpaired batches.

    `extra_loss(model, features, batches)` lets a compared method add its alignment term;
    it receives each modality's backbone input (`features`) and the raw batches.
    `start_epoch` and `total_epochs` place these epochs in a longer budget (a federated
    round's local epochs within all rounds) for the learning-rate schedule.
    `steps_per_epoch` fixes the optimiser steps of an epoch (default: one pass over the largest
    modality, `epoch_steps`); a baseline given the step count a modality gets inside a joint
    run uses it.
    Returns one dict of metrics per epoch, with the epoch's optimiser `steps`: per modality
    `<k>/loss`, and `<k>/train_accuracy` for single-label targets (none for multi-label ones).
    Inside `fed_uml.training.checkpoint.checkpointing(...)` the call is one phase of the run's
    checkpoint: saved every `every` epochs, and resumed from it where it was saved before.
    """
    for name, d in datasets.items():
        if len(d) == 0:
            raise ValueError(f"modality {name!r}: no training samples")
    epochs = settings.epochs if epochs is None else epochs
    g = generator if generator is not None else torch.Generator().manual_seed(settings.seed)
    device = torch.device(settings.device)
    model.to(device).train()
    params = list(model.parameters()) + list(extra_params or [])
    opt = make_optimizer(params, settings)
    cyclers = {k: _Cycler(d, settings.batch_size, g) for k, d in datasets.items()}
    weights = {k: float((settings.loss_weights or {}).get(k, 1.0)) for k in datasets}
    n_steps = epoch_steps(datasets, settings.batch_size) if steps_per_epoch is None else int(steps_per_epoch)
    if n_steps < 1:
        raise ValueError(f"steps per epoch must be >= 1, got {n_steps}")
    total_steps = n_steps * max(total_epochs if total_epochs is not None else epochs, 1)
    step = start_epoch * n_steps
    history: list[dict[str, Any]] = []
    ckpt = checkpoints.active()
    phase = ckpt.next_phase(desc) if ckpt is not None else None
    first_epoch = 0
    if ckpt is not None and phase in ckpt.phases:
        saved = ckpt.phases[phase]
        if int(saved["epochs"]) != epochs or int(saved["steps_per_epoch"]) != n_steps:
            raise ValueError(f"checkpoint {ckpt.path}: phase {phase} was {saved['epochs']} epochs of "
                             f"{saved['steps_per_epoch']} steps, not {epochs} of {n_steps}")
        first_epoch, step, history = _restore(saved, model, extra_loss, extra_params, opt, cyclers, g)
    for epoch in range(first_epoch, epochs):
        t0 = time.perf_counter()
        totals = {k: [0.0, 0, 0] for k in datasets}  # loss sum, correct, seen
        for _ in range(n_steps):
            batches = {}
            for k, c in cyclers.items():
                x, y = c.next()
                if settings.augment:
                    x = augment_batch(x, g)
                batches[k] = (x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            logits, features = _forward(model, batches, settings.fusion, want_features=extra_loss is not None)
            loss = torch.zeros((), device=device)
            for k, (x, y) in batches.items():
                lk = task_loss(logits[k], y)
                loss = loss + weights[k] * lk
                t = totals[k]
                t[0] += lk.item() * len(y)
                if y.ndim == 1:
                    t[1] += (logits[k].argmax(1) == y).sum().item()
                t[2] += len(y)
            if extra_loss is not None:
                assert features is not None  # _forward returns them when a hook wants them
                loss = loss + extra_loss(model, features, batches)
            if settings.schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = settings.lr * 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        record = {"epoch": epoch + 1, "steps": n_steps, "seconds": time.perf_counter() - t0}
        for k, (ls, correct, seen) in totals.items():
            record[f"{k}/loss"] = ls / max(seen, 1)
            if datasets[k].labels.ndim == 1:
                record[f"{k}/train_accuracy"] = correct / max(seen, 1)
        history.append(record)
        if progress is not None:
            progress(record)
        if settings.log_every and ((epoch + 1) % settings.log_every == 0 or epoch + 1 == epochs):
            parts = " ".join(
                f"{k}: loss {record[f'{k}/loss']:.3f}"
                + (f" acc {record[f'{k}/train_accuracy']:.3f}" if f"{k}/train_accuracy" in record else "")
                for k in datasets
            )
            log.info("[%s] epoch %d/%d (%.1fs) %s", desc, epoch + 1, epochs, record["seconds"], parts)
        if ckpt is not None and phase is not None and ((epoch + 1) % ckpt.every == 0 or epoch + 1 == epochs):
            ckpt.save(phase, _state(epoch + 1, epochs, n_steps, step, history, model, extra_loss, extra_params, opt,
                                    cyclers, g))
    return history


def _state(epochs_done: int, epochs: int, n_steps: int, step: int, history: list[dict[str, Any]], model: nn.Module,
           extra_loss: LossHook | None, extra_params: Iterable[torch.Tensor] | None, opt: torch.optim.Optimizer,
           cyclers: Mapping[str, _Cycler],
           g: torch.Generator) -> dict[str, Any]:
    """A phase's whole training state after `epochs_done` epochs (copies: training goes on)."""
    import copy

    return {
        "epochs_done": epochs_done, "epochs": epochs, "steps_per_epoch": n_steps, "step": step,
        "history": copy.deepcopy(history),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra_loss": copy.deepcopy(extra_loss.state_dict()) if isinstance(extra_loss, nn.Module) else {},
        "extra_params": [p.detach().cpu().clone() for p in extra_params or []],
        "optimizer": copy.deepcopy(opt.state_dict()),
        "cyclers": {k: {"order": c.order.clone(), "pos": c.pos} for k, c in cyclers.items()},
        "rng": checkpoints.rng_state(g),
    }


def _restore(saved: Mapping[str, Any], model: nn.Module, extra_loss: LossHook | None,
             extra_params: Iterable[torch.Tensor] | None,
             opt: torch.optim.Optimizer,
             cyclers: Mapping[str, _Cycler], g: torch.Generator) -> tuple[int, int, list[dict[str, Any]]]:
    """Put the state `_state` saved back in place; returns (epochs done, step, history)."""
    model.load_state_dict(saved["model"])
    if isinstance(extra_loss, nn.Module):
        extra_loss.load_state_dict(saved["extra_loss"])
    with torch.no_grad():
        for p, value in zip(extra_params or [], saved["extra_params"]):
            p.copy_(value)
    opt.load_state_dict(saved["optimizer"])
    for k, c in cyclers.items():
        c.order, c.pos = saved["cyclers"][k]["order"].clone(), int(saved["cyclers"][k]["pos"])
    checkpoints.restore_rng_state(saved["rng"], g)
    log.info("resumed after epoch %d of %d", saved["epochs_done"], saved["epochs"])
    return int(saved["epochs_done"]), int(saved["step"]), list(saved["history"])


def _forward(model: Any, batches: Mapping[str, tuple[torch.Tensor, torch.Tensor]], fusion: str, want_features: bool
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    # model: a UMLModel or anything with its `projection(k)` and `backbone`
    """Logits per modality, and each modality's projection output when a method needs it."""
    if fusion == "separate" and not want_features:
        return {k: model(x, k) for k, (x, _) in batches.items()}, None
    feats = {k: model.projection(k)(x) for k, (x, _) in batches.items()}
    if fusion == "separate":
        return {k: model.backbone(z) for k, z in feats.items()}, feats
    shapes = {k: tuple(z.shape[1:]) for k, z in feats.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"training.fusion=concat needs equal projection outputs; got {shapes} (use equal image sizes "
            "or fusion=separate)"
        )
    sizes = [len(z) for z in feats.values()]
    out = model.backbone(torch.cat(list(feats.values())))
    return dict(zip(feats, out.split(sizes))), feats


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, modality: str | None = None, batch_size: int = 256,
            device: str = "cpu") -> torch.Tensor:
    """Predicted labels for `images`, in eval mode (BN uses its running statistics)."""
    if len(images) == 0:
        return torch.empty(0, dtype=torch.long)
    return predict_logits(model, images, modality, batch_size, device).argmax(1)


def evaluate(model: nn.Module, data: ArrayDataset, modality: str | None = None, device: str = "cpu") -> float:
    """Top-1 accuracy of `model` on `data` (single-label targets)."""
    if len(data) == 0:
        raise ValueError(f"modality {modality!r}: no test samples")
    if data.labels.ndim != 1:
        raise ValueError(f"modality {modality!r}: accuracy needs single-label targets; use evaluate_task")
    return (predict(model, data.images, modality, device=device) == data.labels).float().mean().item()


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, modality: str | None = None, batch_size: int = 256,
                   device: str = "cpu") -> torch.Tensor:
    """The logits (N, C) of `images`, in eval mode (BN uses its running statistics)."""
    was_training = model.training
    model.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        out.append((model(x, modality) if modality is not None else model(x)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def evaluate_task(model: nn.Module, data: ArrayDataset, modality: str | None = None,
                  device: str = "cpu") -> dict[str, float]:
    """The metrics of the task of `data`'s targets (`fed_uml.metrics.task_metrics`).

    {"accuracy"} for single-label targets (exactly `evaluate`), {"map_macro", "map_micro",
    "f1_macro"} for multi-hot ones.
    """
    if len(data) == 0:
        raise ValueError(f"modality {modality!r}: no test samples")
    if task_of(data.labels) == "single_label":
        return {"accuracy": evaluate(model, data, modality, device=device)}
    return task_metrics(predict_logits(model, data.images, modality, device=device), data.labels)
