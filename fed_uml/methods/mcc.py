"""MCC: minimum class confusion (Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile
Domain Adaptation", ECCV 2020).

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

Hyperparameters (conf/method/mcc.yaml): trade_off (w, 1.0), temperature (T, 2.5; both the
paper's and thuml's defaults).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from fed_uml.methods.alignment import (
    AlignmentObjective,
    classify,
    entropy,
    method_params,
    run_aligned,
)
from fed_uml.methods.registry import register_method
from fed_uml.modality import ModalityData

DEFAULTS = {"trade_off": 1.0, "temperature": 2.5}


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


class MCCObjective(AlignmentObjective):
    def __init__(self, modalities: list[str], trade_off: float = 1.0, temperature: float = 2.5):
        super().__init__()
        self.modalities = list(modalities)
        self.trade_off, self.temperature = float(trade_off), float(temperature)

    def forward(self, model, features, batches):  # noqa: D102
        losses = {k: mcc_loss(classify(model, features[k]), self.temperature) for k in self.modalities}
        loss = torch.stack(list(losses.values())).mean()
        self.record(**{f"mcc_{k}": v for k, v in losses.items()})
        return self.trade_off * loss


@register_method("mcc")
def run_mcc(data: Mapping[str, ModalityData], cfg: Mapping) -> dict[str, dict]:
    """MCC on every modality's predictions, heterogeneous encoders, shared classifier."""
    p = method_params(cfg, DEFAULTS)
    return run_aligned("mcc", data, cfg, lambda model, d: MCCObjective(list(d), **p))
