"""MCC: minimum class confusion.

Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.

Objective, for the logits Z (B x C) of one batch:
1. temperature scaling: Y = softmax(Z / T)                                  (T = 2.5)
2. entropy weighting: W_ii = B (1 + exp(-H(Y_i))) / sum_j (1 + exp(-H(Y_j))), constants for the
   gradient (H detached, as in thuml's Transfer-Learning-Library, `tllib/self_training/mcc.py`)
3. class correlation: C = Y^T W Y                                           (C x C)
4. category normalisation: C~_jj' = C_jj' / sum_j'' C_j''j'  (each column sums to 1)
5. L_MCC = (1 / C) sum_j sum_{j' != j} |C~_jj'|

L_MCC is 0 when every sample is confidently assigned to one class and distinct classes
never co-occur in a sample's prediction (C~ diagonal); it is (C - 1) / C for uniform
predictions (every entry of C~ is 1/C).

Adaptation: MCC is a regulariser on unlabelled target predictions; in the study's setting
both modalities are labelled and each is a "target" that should be classified well, so
MCC is applied to every modality's batch and averaged:
    L = sum_k CE(h(E_k(x_k)), y_k) + w * mean_k L_MCC(h(E_k(x_k)))
with heterogeneous encoders E_k and a shared classifier h. MCC has no explicit
distribution-matching term; the shared classifier and its class-confusion penalty are
what couples the modalities.

Multi-label data (multi-hot targets, `dataset.task=multi_label`). Classes of a multi-label
data set legitimately co-occur in one patch (coniferous and mixed forest), so penalising the
co-occurrence of two classes in a prediction, as the softmax form does, would fight the labels.
Each class is instead its own two-way decision "c" vs "not c", with probabilities
(sigmoid(z_c / T), 1 - sigmoid(z_c / T)) = softmax((z_c, 0) / T); MCC is computed on each of
these C two-class problems over the batch (same temperature, entropy weights and normalisation)
and averaged over the classes (`multi_label_mcc_loss`). It is 0 for confident yes/no outputs
and 1/2 for logits 0 everywhere (each two-class C~ is uniform: (2 - 1) / 2).

Hyperparameters (`fed_uml.schema.methods.MCCSettings`, their only declaration): trade_off
(w, 1.0), temperature (T, 2.5; both the paper's and thuml's defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from fed_uml.methods.alignment import (
    AlignmentObjective,
    classify,
    entropy,
    is_multi_label,
    method_params,
    run_aligned,
)
from fed_uml.methods.registry import register_method
from fed_uml.modality import ModalityData
from fed_uml.models import UMLModel
from fed_uml.schema.methods import MCCSettings


def class_confusion(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """The category-normalised, entropy-weighted class confusion matrix C~ (C x C)."""
    probs = F.softmax(logits / temperature, dim=1)
    b = probs.shape[0]
    w = 1.0 + torch.exp(-entropy(probs).detach())  # constant weights, as in the reference code
    w = (b * w / w.sum()).unsqueeze(1)
    conf = (probs * w).t() @ probs
    return conf / conf.sum(dim=0, keepdim=True)


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion loss: the off-diagonal mass of C~, divided by the class count."""
    conf = class_confusion(logits, temperature)
    c = conf.shape[0]
    return (conf.sum() - conf.trace()) / c


def multi_label_mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """MCC for multi-label outputs.

    The mean over classes of the MCC of the two-way decision "c" vs "not c", logits (z_c, 0) (see
    the module docstring).
    """
    binary = torch.stack([logits, torch.zeros_like(logits)], dim=2)  # (B, C, 2)
    return torch.stack([mcc_loss(binary[:, c], temperature) for c in range(logits.shape[1])]).mean()


def task_mcc_loss(logits: torch.Tensor, temperature: float = 2.5, multi_label: bool = False) -> torch.Tensor:
    """`mcc_loss` for single-label outputs, `multi_label_mcc_loss` for multi-label ones."""
    return multi_label_mcc_loss(logits, temperature) if multi_label else mcc_loss(logits, temperature)


class MCCObjective(AlignmentObjective):
    """The MCC loss of each modality's predictions on its own data, added to the task loss."""

    def __init__(self, modalities: list[str], trade_off: float = MCCSettings.trade_off,
                 temperature: float = MCCSettings.temperature, multi_label: bool = False):
        super().__init__()
        self.modalities = list(modalities)
        self.trade_off, self.temperature = float(trade_off), float(temperature)
        self.multi_label = bool(multi_label)

    def forward(self, model: UMLModel, features: Mapping[str, torch.Tensor],  # noqa: D102
                batches: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        losses = {k: task_mcc_loss(classify(model, features[k]), self.temperature, self.multi_label)
                  for k in self.modalities}
        loss = torch.stack(list(losses.values())).mean()
        self.record(**{f"mcc_{k}": v for k, v in losses.items()})
        return self.trade_off * loss


@register_method("mcc")
def run_mcc(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """MCC on every modality's predictions, heterogeneous encoders, shared classifier."""
    p = method_params(cfg, MCCSettings)
    multi_label = is_multi_label(data)
    return run_aligned("mcc", data, cfg, lambda model, d: MCCObjective(list(d), multi_label=multi_label, **p))
