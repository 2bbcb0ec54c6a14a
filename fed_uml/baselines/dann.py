"""DANN: domain-adversarial training (Ganin et al., "Domain-Adversarial Training of Neural
Networks", JMLR 17(59), 2016), with the modality as the domain.

Objective. A domain discriminator D reads encoder features f = E_k(x) through a gradient
reversal layer R_lambda and predicts the modality:

    L = sum_k CE(h(f_k), y_k)  +  w * L_d,     L_d = mean_k mean_{i in batch k} CE(D(R_lambda(f_i)), k)

D minimises L_d; through R_lambda the encoders receive -lambda * dL_d/df, i.e. they maximise
the discriminator's loss, so that the modalities' feature distributions become
indistinguishable. lambda follows the paper's schedule lambda_p = 2/(1+exp(-gamma p)) - 1
(gamma = 10, p = training progress).

Adaptation to the study's setting (heterogeneous encoders, both modalities labelled):
- two encoders (one per modality) instead of one shared feature extractor, one shared
  classifier h; the classification loss covers every modality (both are labelled);
- K modalities: D is a K-way classifier (softmax cross-entropy over modality indices), the
  usual multi-domain extension; for K = 2 it is the paper's binary domain classifier
  (a 2-way softmax is a logistic regression on the logit difference). Each modality's
  samples are averaged separately, so unequal batch sizes do not bias D;
- optimiser, learning rate and budget are the runner's (the same for every method) rather
  than the paper's annealed SGD; D is trained by the same optimiser (as in thuml's
  Transfer-Learning-Library), with the original code's 2x1024 ReLU+dropout MLP.

Hyperparameters (conf/method/dann.yaml): trade_off (w, 1.0), grl_gamma (10.0),
grl_max (1.0), hidden (1024), dropout (0.5).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fed_uml.baselines.common import (
    AlignmentObjective,
    DomainDiscriminator,
    classifier_in_features,
    dann_coefficient,
    domain_classification_loss,
    grad_reverse,
    method_params,
    require_modalities,
    run_aligned,
)
from fed_uml.data.base import ModalityData
from fed_uml.methods import register_method

DEFAULTS = {"trade_off": 1.0, "grl_gamma": 10.0, "grl_max": 1.0, "hidden": 1024, "dropout": 0.5}


def domain_labels(features: Mapping[str, torch.Tensor], order: list[str]) -> torch.Tensor:
    """Modality index of every row of `torch.cat([features[k] for k in order])`."""
    return torch.cat([
        torch.full((len(features[k]),), i, dtype=torch.long, device=features[k].device) for i, k in enumerate(order)
    ])


class DANNObjective(AlignmentObjective):
    def __init__(self, modalities: list[str], feature_dim: int, trade_off: float = 1.0, grl_gamma: float = 10.0,
                 grl_max: float = 1.0, hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.modalities = list(modalities)
        self.trade_off, self.grl_gamma, self.grl_max = float(trade_off), float(grl_gamma), float(grl_max)
        self.discriminator = DomainDiscriminator(feature_dim, int(hidden), len(self.modalities), float(dropout))

    def coefficient(self) -> float:
        return dann_coefficient(self.progress, self.grl_gamma, self.grl_max)

    def forward(self, model, features, batches):  # noqa: D102
        f = torch.cat([features[k] for k in self.modalities])
        domains = domain_labels(features, self.modalities)
        coeff = self.coefficient()
        logits = self.discriminator(grad_reverse(f, coeff))
        loss = domain_classification_loss(logits, domains)
        self.record(domain_loss=loss, domain_acc=(logits.argmax(1) == domains).float().mean(), grl=coeff)
        return self.trade_off * loss


@register_method("dann")
def run_dann(data: Mapping[str, ModalityData], cfg: Mapping) -> dict[str, dict]:
    """DANN with heterogeneous encoders and a shared classifier (both modalities labelled)."""
    require_modalities(data, "dann")
    p = method_params(cfg, DEFAULTS)
    return run_aligned(
        "dann", data, cfg, lambda model, d: DANNObjective(list(d), classifier_in_features(model), **p),
    )
