"""What the compared methods (ISCA, DANN, CDAN, MCC, MDD) share.

Heterogeneous encoders, gradient reversal and its schedule, discriminators, the alignment objective
and its runner.

Setting (Table 2 of the study, "domain adaptation with heterogeneous encoders"): every
modality k has its own encoder E_k (all stages of the configured backbone, built with
`model_from_config(..., specific_layers=<number of stages>)`), one classifier h is shared, both
modalities are labelled (the cross-entropy of every modality is trained, as in UML), and the
"domain" of a sample is its modality. A method adds one alignment objective between the
modalities' encoder outputs `features[k] = E_k(x)` through `train_unpaired`'s hooks:
`extra_loss(model, features, batches)` returns the term added to the summed cross-entropies
and `extra_params` are the objective's own trainable tensors (e.g. a domain discriminator),
which the loop's optimizer updates together with the model.

Everything else (data, optimizer, epochs, batch size, augmentation, evaluation with and
without BN calibration) is `run_aligned`'s (through `fed_uml.methods.runner`), so that every
method gets the same budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fed_uml.methods.runner import evaluate_with_calibration, train_settings
from fed_uml.metrics import task_of
from fed_uml.modality import ModalityData
from fed_uml.models import UMLModel, backbone_stages, model_from_config
from fed_uml.models.registry import get_stage_builder
from fed_uml.schema.convert import typed
from fed_uml.schema.methods import GradientReversalSettings, MethodSettings
from fed_uml.training import seed_everything, train_unpaired
from fed_uml.training.loop import epoch_steps

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Model: heterogeneous encoders + one shared classifier
# --------------------------------------------------------------------------------------


def num_stages(model_cfg: Mapping[str, Any]) -> int:
    """How many stages the configured backbone has (all of them become modality-specific)."""
    return backbone_stages(model_cfg["backbone"])


def keep_seeded_draws(model_cfg: Mapping[str, Any]) -> None:
    """Draw, from the global RNG, one network of the configured backbone (1 channel, 2 classes) and discard it.

    The stage count used to be counted on such a network, built right before the model; the
    compared methods' initial weights, and everything drawn after them (discriminators,
    random maps, dropout masks), follow that draw. It is kept so that their results stay
    bit-identical for the same seed; removing it re-draws every compared method's
    initialisation (a re-baselining of their results, not a refactoring).
    """
    cfg = dict(model_cfg)
    name = cfg.pop("backbone")
    cfg.pop("specific_layers", None)
    cfg.pop("projection_init", None)
    get_stage_builder(name)(1, 2, **cfg)


def build_heterogeneous_model(model_cfg: Mapping[str, Any], data: Mapping[str, ModalityData]) -> UMLModel:
    """`model_cfg`'s backbone with every stage modality-specific: only the classifier is shared."""
    keep_seeded_draws(model_cfg)
    num_classes = next(iter(data.values())).num_classes
    return model_from_config(model_cfg, {k: d.channels for k, d in data.items()}, num_classes,
                             specific_layers=num_stages(model_cfg))


def classifier_in_features(model: UMLModel) -> int:
    """Width of the encoders' output: the input width of the shared classifier's first Linear."""
    for m in model.backbone.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ValueError("the shared part of the model has no nn.Linear classifier")


def classify(model: UMLModel, features: torch.Tensor) -> torch.Tensor:
    """The shared classifier's logits for encoder outputs (the same module the loop trains).

    With heterogeneous encoders the shared part is only the classifier head (a Linear, with
    no BatchNorm), so applying it again inside a hook changes no running statistics. (With a
    dropout head, e.g. small_cnn's `dropout` > 0, this second pass draws its own mask.)
    """
    return model.backbone(features)


# --------------------------------------------------------------------------------------
# Gradient reversal (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016)
# --------------------------------------------------------------------------------------


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by `-coeff` in the backward pass."""
    return _GradientReverse.apply(x, coeff)


class GradientReversal(nn.Module):
    """The gradient reversal layer R_lambda as a module (`coeff` may be changed during training)."""

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad_reverse(x, self.coeff)


def dann_coefficient(progress: float, gamma: float = 10.0, high: float = 1.0) -> float:
    """DANN's adaptation-factor schedule lambda_p = high * (2 / (1 + exp(-gamma p)) - 1).

    `progress` p runs from 0 to 1 over training; gamma=10 as in Ganin et al. (JMLR 2016, Sec.
    5.2.2). gamma <= 0 gives the constant `high` (no warm-up).
    """
    if gamma <= 0:
        return float(high)
    p = min(max(float(progress), 0.0), 1.0)
    return float(high) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


GRL_SCHEDULES = ("budget", "fixed")
# The gradient-reversal settings of every method with a GRL (DANN, CDAN, MDD) and their defaults
# (the published schedule over this run's budget, gamma 10, lambda up to 1, the reference code's
# 1000 steps for the "fixed" ramp): fed_uml.schema.methods.GradientReversalSettings.
GRL = GradientReversalSettings


def grl_coefficient(step: int, total_steps: int, schedule: str = "budget", gamma: float = 10.0, high: float = 1.0,
                    max_iters: int = 1000) -> float:
    """The gradient-reversal coefficient lambda at optimisation step `step` (0 at the first step).

    - "budget" (the published schedule, Ganin et al. JMLR 2016): lambda = high * (2 / (1 + exp(-gamma p)) - 1)
      with p = step / total_steps, so lambda reaches ~high at the end of *this run's* budget whatever its
      length (`dann_coefficient`; gamma <= 0 gives the constant `high`);
    - "fixed" (the reference code): lambda = high * (2 / (1 + exp(-step / max_iters)) - 1), independent of
      the budget: thuml's Transfer-Learning-Library `WarmStartGradientReverseLayer(alpha=1, lo=0, hi=1,
      max_iters=1000)` (DANN, CDAN) and `calc_coeff(i, alpha=10, max_iter=10000)` of thuml/CDAN and
      lijin118/ATM, which is the same function. `gamma` is not used (the references' alpha / max_iters is
      1 / `max_iters`), and lambda keeps growing past `max_iters` towards `high`, as there. Steps count
      from 0 as in TLlib (thuml/CDAN's AdversarialNetwork counts from 1: one step later).
    """
    if schedule == "budget":
        return dann_coefficient(step / max(int(total_steps), 1), gamma, high)
    if schedule == "fixed":
        if max_iters <= 0:
            raise ValueError(f"grl_max_iters must be positive, got {max_iters}")
        return float(high) * (2.0 / (1.0 + math.exp(-max(float(step), 0.0) / float(max_iters))) - 1.0)
    raise ValueError(f"grl_schedule must be one of {GRL_SCHEDULES}, got {schedule!r}")


class GRLSchedule:
    """Mixin for an AlignmentObjective with gradient reversal (DANN, CDAN, MDD): the `grl_*` settings and lambda."""

    step: int  # of the AlignmentObjective it is mixed into
    total_steps: int

    def set_grl(self, grl_schedule: str = GRL.grl_schedule, grl_gamma: float = GRL.grl_gamma,
                grl_max: float = GRL.grl_max, grl_max_iters: int = GRL.grl_max_iters) -> None:
        """Set the `grl_*` settings (the names and defaults of `GradientReversalSettings`)."""
        if grl_schedule not in GRL_SCHEDULES:
            raise ValueError(f"method.grl_schedule must be one of {GRL_SCHEDULES}, got {grl_schedule!r}")
        self.grl_schedule, self.grl_gamma, self.grl_max = grl_schedule, float(grl_gamma), float(grl_max)
        self.grl_max_iters = int(grl_max_iters)
        grl_coefficient(0, 1, grl_schedule, self.grl_gamma, self.grl_max, self.grl_max_iters)  # validates

    def coefficient(self) -> float:
        """Lambda for the step being taken (`self.step` optimisation steps done so far)."""
        return grl_coefficient(self.step, self.total_steps, self.grl_schedule, self.grl_gamma, self.grl_max,
                               self.grl_max_iters)


# --------------------------------------------------------------------------------------
# Discriminators and small losses
# --------------------------------------------------------------------------------------


class DomainDiscriminator(nn.Module):
    """The adversarial network of DANN/CDAN: in -> hidden -> hidden -> outputs.

    As in the original DANN/CDAN code (not TLlib's BatchNorm variant): two hidden layers
    (1024 units there), ReLU and dropout 0.5, and no BatchNorm, so that its output for a
    sample never depends on which modality shares its batch.
    """

    def __init__(self, in_features: int, hidden: int = 1024, outputs: int = 1, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x)


def entropy(probs: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-row Shannon entropy -sum_c p_c log(p_c + eps) (the eps of the CDAN/MCC code)."""
    return -(probs * torch.log(probs + eps)).sum(dim=1)


def is_multi_label(data: Mapping[str, ModalityData]) -> bool:
    """Whether the data are multi-label (multi-hot targets, `fed_uml.metrics.task_of`)."""
    return task_of(next(iter(data.values())).train.labels) == "multi_label"


def class_probabilities(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """The classifier's class probabilities.

    Softmax over classes (single-label) or one sigmoid per class (multi-label: every class is its
    own yes/no decision).
    """
    return torch.sigmoid(logits) if multi_label else F.softmax(logits, dim=1)


def label_set_entropy(probs: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-row entropy of the predicted label set under independent per-class Bernoulli outputs.

    sum_c -(p_c log(p_c + eps) + (1 - p_c) log(1 - p_c + eps)) (C log 2 for p = 1/2 everywhere, 0
    for confident outputs). The multi-label form of `entropy` (CDAN+E's conditioning).
    """
    return -(probs * torch.log(probs + eps) + (1 - probs) * torch.log(1 - probs + eps)).sum(dim=1)


def domain_classification_loss(logits: torch.Tensor, domains: torch.Tensor,
                               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of a K-way domain discriminator, balanced over domains.

    Each domain's samples are averaged first (weighted by `weights` if given, normalised
    within the domain), then the K domain means are averaged, so a modality with a smaller
    batch weighs the same. With K=2 and logits (0, z) this is DANN's binary cross-entropy
    on the logit z.
    """
    per_sample = F.cross_entropy(logits, domains, reduction="none")
    if weights is None:
        weights = torch.ones_like(per_sample)
    terms = []
    for d in torch.unique(domains):
        m = domains == d
        w = weights[m]
        terms.append((w * per_sample[m]).sum() / w.sum())
    return torch.stack(terms).mean()


def modality_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """Every unordered pair of modalities, in the configured order (the K>2 generalisation)."""
    return list(combinations(list(names), 2))


def safe_norm(diff: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Euclidean norm over the last dimension with a zero (not NaN) gradient at 0."""
    sq = (diff * diff).sum(-1)
    if squared:
        return sq
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


# --------------------------------------------------------------------------------------
# Objective interface and the runner of the compared methods
# --------------------------------------------------------------------------------------


class AlignmentObjective(nn.Module):
    """Base class: `forward(model, features, batches)` is the `extra_loss` hook.

    Subclasses get `self.progress` (training progress in [0, 1], advanced once per call, i.e.
    per optimisation step) and may accumulate scalar diagnostics in `self.stats` (averaged
    and logged once per epoch).
    """

    def __init__(self) -> None:
        super().__init__()
        self.total_steps = 1
        self.step = 0
        self.stats: dict[str, list[float]] = {}

    @property
    def progress(self) -> float:
        """Fraction of the training done, in [0, 1] (adversarial weights ramp with it)."""
        return min(self.step / max(self.total_steps, 1), 1.0)

    def setup(self, model: UMLModel, total_steps: int) -> None:
        """Called once before training (after the model is built)."""
        self.total_steps = max(int(total_steps), 1)
        self.step = 0

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the loop's optimizer trains together with the model (`extra_params`)."""
        return [p for p in self.parameters() if p.requires_grad]

    def record(self, **values: float | torch.Tensor) -> None:
        """Record scalar statistics of this step, averaged by `pop_stats`."""
        for k, v in values.items():
            self.stats.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))

    def pop_stats(self) -> dict[str, float]:
        """The mean of every recorded statistic since the last call, and start afresh."""
        out = {k: sum(v) / len(v) for k, v in self.stats.items() if v}
        self.stats = {}
        return out

    def get_extra_state(self) -> dict[str, int]:
        """The step count goes into `state_dict`, so that a resumed run continues the schedules."""
        return {"step": self.step, "total_steps": self.total_steps}

    def set_extra_state(self, state: dict[str, int]) -> None:
        """Restore the step count from a checkpoint."""
        self.step, self.total_steps = int(state["step"]), int(state["total_steps"])

    def __call__(self, model: UMLModel, features: Mapping[str, torch.Tensor],  # the hook; counts steps
                 batches: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The objective's loss for this step; counts the step."""
        out = super().__call__(model, features, batches)
        self.step += 1
        return out


def require_modalities(data: Mapping[str, ModalityData], method: str, minimum: int = 2) -> None:
    """Refuse a method that aligns modalities when fewer than `minimum` are configured."""
    if len(data) < minimum:
        raise ValueError(
            f"method {method!r} aligns modalities and needs at least {minimum}; got {list(data)} "
            "(setting dataset.modalities)"
        )


def method_params(cfg: Mapping[str, Any], schema: type[MethodSettings]) -> dict[str, Any]:
    """The method's hyperparameters: the `method` config group read as `schema`.

    `schema` is the method's settings class (`fed_uml.schema.methods`, whose defaults are the only
    ones), without what every method has (name, calibrate).

    An unknown key is a `SettingsError` naming it, so that a typo in `method.<key>=...` does
    not pass silently (composing conf/ refuses it too; this covers a config built otherwise).
    """
    settings = typed(schema, cfg.get("method") or {}, "method.")
    common = {f.name for f in dataclasses.fields(MethodSettings)}
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in common}


def run_aligned(
    name: str,
    data: Mapping[str, ModalityData],
    cfg: Mapping[str, Any],
    make_objective: Callable[[UMLModel, Mapping[str, ModalityData]], AlignmentObjective],
    prepare_model: Callable[[UMLModel], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train heterogeneous encoders + shared classifier with `make_objective`'s alignment term.

    Evaluated and deployed by `evaluate_with_calibration` (`method.calibrate` decides which
    model is deployed).

    Records the number of modality-specific stages actually used in
    `cfg["model"]["specific_layers"]` (the compared methods always make every stage specific), so
    that the config written to results.json describes the trained model.
    """
    settings = train_settings(cfg)
    g = seed_everything(settings.seed)
    model = build_heterogeneous_model(cfg["model"], data)
    n = len(model.projection(model.modalities[0]))
    if isinstance(cfg.get("model"), dict) and cfg["model"].get("specific_layers") != n:
        log.info("%s: heterogeneous encoders: every one of the %d stages is modality-specific "
                 "(model.specific_layers=%d recorded in the results)", name, n, n)
        cfg["model"]["specific_layers"] = n
    if prepare_model is not None:
        prepare_model(model)
    objective = make_objective(model, data)
    device = torch.device(settings.device)
    objective.to(device).train()
    datasets = {k: d.train for k, d in data.items()}
    total = settings.epochs * epoch_steps(datasets, settings.batch_size)
    objective.setup(model, total)

    def progress(record: dict[str, Any]) -> None:
        stats = objective.pop_stats()
        record.update({f"{name}/{k}": v for k, v in stats.items()})
        if settings.log_every and (record["epoch"] % settings.log_every == 0 or record["epoch"] == settings.epochs):
            log.info("[%s] epoch %d alignment: %s", name, record["epoch"],
                     " ".join(f"{k} {v:.4f}" for k, v in stats.items()))

    train_unpaired(
        model, datasets, settings, generator=g, extra_loss=objective,
        extra_params=objective.trainable_parameters(), progress=progress, desc=name,
    )
    return evaluate_with_calibration(model, data, cfg)


def frozen_call(module: nn.Module, *args: torch.Tensor) -> Any:
    """`module(*args)` with its parameters treated as constants (no gradient reaches them).

    Gradients still flow to the inputs: the encoders are trained through a fixed critic.
    """
    params = {k: v.detach() for k, v in module.named_parameters()}
    return torch.func.functional_call(module, params, args)

