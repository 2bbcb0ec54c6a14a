"""CDAN: conditional adversarial domain adaptation, with the modality as the domain.

Long, Cao, Wang, Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

Objective. The discriminator is conditioned on the classifier's predictions through the
multilinear map T(f, g) = f (x) g (outer product, flattened; f the encoder features of width
D, g = softmax(h(f)) of width C, so T has C*D entries, entry c*D + d = g_c f_d). When C*D
exceeds `max_multilinear_dim` (4096 in the paper) the randomized multilinear map
T(f, g) = (R_f f) * (R_g g) / sqrt(d_r) with fixed Gaussian R_f, R_g replaces it (d_r = 1024).
g is detached (as in the original code): the conditioning carries no gradient.

    L = sum_k CE(h(f_k), y_k) + w * L_d,
    L_d = mean_k  sum_{i in k} w_i CE(D(R_lambda(T(f_i, g_i))), k) / sum_{i in k} w_i

with gradient reversal R_lambda (the schedule of dann.py: `grl_schedule` budget by default, fixed
= the reference code's 2/(1+exp(-i/1000)) - 1) and, with entropy conditioning (CDAN+E),
w_i = 1 + exp(-H(g_i)) normalised within each modality's batch (so confident samples count
more); without it w_i = 1. For two modalities with equal batches, plain CDAN is exactly the loss of
thuml's Transfer-Learning-Library and of the original thuml/CDAN `loss.CDAN`.

CDAN+E, where the references differ:
- normalisation: within each modality, as the original thuml/CDAN code (`loss.CDAN`: source and
  target weights each divided by their own sum), so that each modality weighs the same in L_d, as in
  plain CDAN and DANN, whatever the batch sizes; TLlib normalises over the concatenated batch;
- gradient: the weights are constants (g detached, as in TLlib); the original code lets a reversed
  gradient flow through H(g) into the classifier (a hook on the entropy), which we do not follow: it
  would make the adversarial term train the shared classifier through the confidence weights.

Multi-label data (multi-hot targets, `dataset.task=multi_label`): the classifier's outputs are
one sigmoid per class, so the conditioning is g = sigmoid(h(f)) (each entry the probability of
one label; T keeps its form, entry c*D + d = g_c f_d), and CDAN+E's entropy is that of the
predicted label set under independent per-class outputs, H(g) = sum_c h_b(g_c) with h_b the
binary entropy (`alignment.label_set_entropy`: C log 2 when every g_c = 1/2, 0 when confident).

Adaptation (see also dann.py): heterogeneous encoders, one shared classifier, both
modalities labelled; a K-way domain discriminator for K modalities (binary for K = 2); the
runner's optimiser and budget; D (1024-unit, ReLU + dropout, no BN) trained by the same
optimiser.

Hyperparameters (`fed_uml.schema.methods.CDANSettings`, their only declaration): trade_off
(1.0), entropy_conditioning (false: plain CDAN, as named in the study's Table 2), randomized
(null: automatic when C*D > 4096), randomized_dim (1024), max_multilinear_dim (4096), hidden
(1024), dropout (0.5), and the gradient reversal's grl_schedule (budget), grl_gamma (10),
grl_max (1), grl_max_iters (1000).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fed_uml.methods.alignment import (
    AlignmentObjective,
    DomainDiscriminator,
    GRLSchedule,
    class_probabilities,
    classifier_in_features,
    classify,
    domain_classification_loss,
    entropy,
    grad_reverse,
    is_multi_label,
    label_set_entropy,
    method_params,
    require_modalities,
    run_aligned,
)
from fed_uml.methods.dann import domain_labels
from fed_uml.methods.registry import register_method
from fed_uml.modality import ModalityData
from fed_uml.models import UMLModel
from fed_uml.schema.methods import CDANSettings

S = CDANSettings  # the defaults of the objective's arguments


def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """T(f, g) = g (x) f flattened: shape (N, C*D), entry [n, c*D + d] = g[n, c] * f[n, d]."""
    if f.ndim != 2 or g.ndim != 2 or len(f) != len(g):
        raise ValueError(f"multilinear map needs (N, D) and (N, C) inputs, got {tuple(f.shape)} and {tuple(g.shape)}")
    return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """T(f, g) = (f R_f) * (g R_g) / sqrt(d): fixed Gaussian projections (buffers, never trained).

    Its inner products approximate those of the full multilinear map in expectation.
    """

    r_f: torch.Tensor  # buffers
    r_g: torch.Tensor

    def __init__(self, feature_dim: int, num_classes: int, output_dim: int = 1024):
        super().__init__()
        self.register_buffer("r_f", torch.randn(feature_dim, output_dim))
        self.register_buffer("r_g", torch.randn(num_classes, output_dim))
        self.output_dim = int(output_dim)

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.output_dim)


def entropy_weights(probs: torch.Tensor, domains: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """CDAN+E's sample weights 1 + exp(-H(g)), normalised to mean 1 within each domain (thuml/CDAN `loss.CDAN`).

    For multi-label outputs H is the label-set entropy (`alignment.label_set_entropy`).
    """
    w = 1.0 + torch.exp(-(label_set_entropy(probs) if multi_label else entropy(probs)))
    out = torch.empty_like(w)
    for d in torch.unique(domains):
        m = domains == d
        out[m] = w[m] / w[m].mean()
    return out


class CDANObjective(GRLSchedule, AlignmentObjective):
    """trade_off * the conditional domain discriminator's loss.

    `grl` are the `grl_*` settings (`GRLSchedule.set_grl`); the defaults are the settings'
    (`CDANSettings`).
    """

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int, trade_off: float = S.trade_off,
                 entropy_conditioning: bool = S.entropy_conditioning, randomized: bool | None = S.randomized,
                 randomized_dim: int = S.randomized_dim, max_multilinear_dim: int = S.max_multilinear_dim,
                 hidden: int = S.hidden, dropout: float = S.dropout, multi_label: bool = False, **grl: Any):
        super().__init__()
        self.modalities = list(modalities)
        self.multi_label = bool(multi_label)
        self.trade_off = float(trade_off)
        self.set_grl(**grl)
        self.entropy_conditioning = bool(entropy_conditioning)
        if randomized is None:
            randomized = feature_dim * num_classes > int(max_multilinear_dim)
        self.random_map = (RandomizedMultilinearMap(feature_dim, num_classes, int(randomized_dim))
                           if randomized else None)
        in_dim = int(randomized_dim) if randomized else feature_dim * num_classes
        self.discriminator = DomainDiscriminator(in_dim, int(hidden), len(self.modalities), float(dropout))

    def conditioned(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The features conditioned on the predictions (random or full multilinear map)."""
        return self.random_map(f, g) if self.random_map is not None else multilinear_map(f, g)

    def forward(self, model: UMLModel, features: Mapping[str, torch.Tensor],  # noqa: D102
                batches: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        f = torch.cat([features[k] for k in self.modalities])
        g = class_probabilities(classify(model, f), self.multi_label).detach()
        domains = domain_labels(features, self.modalities)
        coeff = self.coefficient()
        logits = self.discriminator(grad_reverse(self.conditioned(f, g), coeff))
        weights = entropy_weights(g, domains, self.multi_label) if self.entropy_conditioning else None
        loss = domain_classification_loss(logits, domains, weights)
        self.record(domain_loss=loss, domain_acc=(logits.argmax(1) == domains).float().mean(), grl=coeff)
        return self.trade_off * loss


@register_method("cdan")
def run_cdan(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """CDAN (CDAN+E with method.entropy_conditioning=true), heterogeneous encoders, shared classifier."""
    require_modalities(data, "cdan")
    p = method_params(cfg, CDANSettings)
    num_classes = next(iter(data.values())).num_classes
    multi_label = is_multi_label(data)
    return run_aligned(
        "cdan", data, cfg,
        lambda model, d: CDANObjective(list(d), classifier_in_features(model), num_classes, multi_label=multi_label,
                                       **p),
    )
