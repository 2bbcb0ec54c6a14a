"""MDD: Maximum Density Divergence, the loss of ATM ("adversarial tight match").

Li, Chen, Ding, Zhu, Lu, Shen, "Maximum Density Divergence for Domain Adaptation", IEEE TPAMI
43(11), 2021, arXiv:2004.12615; official code github.com/lijin118/ATM. Not the Margin Disparity
Discrepancy that thuml's library calls MDD.

The divergence. For two domains a, b with features phi(x) and labels, MDD combines
- "match": the inter-domain divergence, a multiple of the expected distance between a sample of a and
  a sample of b, D_inter = (1/2) E ||phi(x_a) - phi(x_b)||, and
- "tight": the intra-class density of each domain, written as minus the expected distance
  between two samples of the same class in that domain,
  Dens_a = -E_{y_i = y_j} ||phi(x_a^i) - phi(x_a^j)||  (and Dens_b likewise):

    MDD(a, b) = D_inter - w_a Dens_a - w_b Dens_b
              = D_inter + w_a E_{same class in a} ||.|| + w_b E_{same class in b} ||.||,

minimised to match the domains and make every class dense. It is 0 exactly when the
(paired) samples of the two domains coincide and every class is collapsed to a point, and
it grows as the domains move apart. As in the official code (`loss.mdd_loss` of train_image.py):
phi = softmax of the encoder features, ||.|| the (non-squared) Euclidean norm, D_inter
estimated on index-paired samples of the two batches (x_a^i with x_b^i; the batches are
drawn independently, so this is a one-pair-per-sample estimate of the expectation) as the sum of
the B paired distances divided by the size 2B of the concatenated batch (hence the 1/2;
`pairing: all` averages over every cross pair instead, with the same 1/2), the intra terms
averaged over all same-class pairs i < j of a batch (0 if a batch has none; the official code
divides by zero there).

ATM = CDAN+E (entropy-conditioned adversarial loss through gradient reversal, see cdan.py)
+ mdd_weight * MDD:

    L = sum_k CE(h(E_k(x_k)), y_k) + trade_off * L_CDAN+E + mdd_weight * MDD

mdd_weight = 0.01 is the value of the ATM README's digit commands (SVHN->MNIST, USPS<->MNIST); the
argparse default is 0 (MDD off) and the task commands of its train.sh use 0.005-0.05 (Office-31 A->W
0.05, ImageCLEF I->C 0.025, SVHN->MNIST 0.01, MNIST->USPS 0.005).

Adaptation to the study's setting, and where we differ from the ATM code:
- both modalities are labelled, so the intra-class terms of both use the true labels
  (ATM uses pseudo-labels argmax h(x) on the unlabelled target);
- heterogeneous encoders E_k, one shared classifier, K-way discriminator (see cdan.py);
- K > 2 modalities: D_inter averaged over every pair of modalities, one intra-class term
  per modality (weight `intra_weight`; for K = 2 exactly the two-domain MDD);
- CDAN+E as the CDAN paper and the original thuml/CDAN code weight it (per-sample weights
  1 + exp(-H), see cdan.py). ATM's copy of `loss.CDAN` multiplies the weights by the batch-mean BCE
  (`nn.BCELoss()(...)` where its per-sample loss `l` is computed and left unused), so its value is
  that of unweighted CDAN; `method.entropy_conditioning=false` reproduces that value;
- the gradient-reversal schedule (`grl_schedule`, see dann.py): "budget" by default, DANN's schedule
  over our training budget; ATM uses CDAN's calc_coeff, a fixed ramp (lambda = 2/(1+exp(-i/1000)) - 1:
  0.46 after 1000, 0.99 after 5000 of its 5000-40000 iterations), which is `grl_schedule: fixed`;
- the optimiser is the runner's; the code's optional entropic-confusion term (`--entropic_weight`,
  argparse default 0; train.sh 0.5 for ImageCLEF I->C, 0.1 for MNIST->USPS) is not included.

Multi-label data (multi-hot targets): "same class" becomes "sharing a label". The intra-class
term is the mean distance over the pairs i < j weighted by the number of labels they share,
sum_{i<j} s_ij ||phi_i - phi_j|| / sum_{i<j} s_ij with s_ij = |Y_i & Y_j| (`intra_class_distance`),
so every label's positives are pulled together; for one-hot targets s_ij = [y_i = y_j] and this
is exactly the single-label term. The adversarial part is CDAN(+E)'s multi-label form (see
cdan.py); `space: probabilities` uses one sigmoid per class; `softmax_features`, the default, is
the softmax of the encoder features and does not depend on the task.

Hyperparameters (`fed_uml.schema.methods.MDDSettings`, their only declaration): mdd_weight
(0.01), intra_weight (1.0), pairing (index), space (softmax_features | features |
probabilities), squared (false), trade_off (1.0; 0 trains MDD alone), entropy_conditioning
(true), and the CDAN settings
(grl_schedule, grl_gamma, grl_max, grl_max_iters, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from fed_uml.methods.alignment import (
    AlignmentObjective,
    class_probabilities,
    classifier_in_features,
    classify,
    is_multi_label,
    method_params,
    modality_pairs,
    require_modalities,
    run_aligned,
    safe_norm,
)
from fed_uml.methods.cdan import CDANObjective
from fed_uml.methods.registry import register_method
from fed_uml.modality import ModalityData
from fed_uml.models import UMLModel
from fed_uml.schema.methods import MDDSettings

S = MDDSettings  # the defaults of the objective's arguments
PAIRINGS = ("index", "all")
SPACES = ("softmax_features", "features", "probabilities")


def inter_domain_divergence(a: torch.Tensor, b: torch.Tensor, pairing: str = "index",
                            squared: bool = False) -> torch.Tensor:
    """D_inter as the official code computes it: half the mean distance between samples of a and b.

    `loss.mdd_loss` of lijin118/ATM sums the B index-paired distances and divides by the size 2B of
    the concatenated batch, so D_inter = (1/2) E ||phi(x_a) - phi(x_b)||. "index" pairs a_i with b_i
    (the first min(|a|, |b|) samples); "all" averages over every cross pair, with the same factor 1/2.
    """
    if pairing == "index":
        n = min(len(a), len(b))
        return safe_norm(a[:n] - b[:n], squared).sum() / (2 * n)
    if pairing == "all":
        return safe_norm(a.unsqueeze(1) - b.unsqueeze(0), squared).mean() / 2
    raise ValueError(f"MDD pairing must be one of {PAIRINGS}, got {pairing!r}")


def intra_class_distance(x: torch.Tensor, labels: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Mean distance over the same-class pairs i < j of a batch (minus the intra-class density).

    Multi-hot `labels` (B, C): the pairs weighted by the number of labels they share (see the
    module docstring); 0 for a batch without such a pair.
    """
    if labels.ndim == 2:
        shared = labels.to(x.dtype) @ labels.to(x.dtype).t()
        weight = torch.triu(shared, diagonal=1)
        if not bool((weight > 0).any()):
            return x.sum() * 0.0
        d = safe_norm(x.unsqueeze(1) - x.unsqueeze(0), squared)
        return (weight * d).sum() / weight.sum()
    same = (labels.unsqueeze(0) == labels.unsqueeze(1)).triu(diagonal=1)
    if not bool(same.any()):
        return x.sum() * 0.0
    d = safe_norm(x.unsqueeze(1) - x.unsqueeze(0), squared)
    return d[same].mean()


def mdd_loss(a: torch.Tensor, b: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor,
             intra_weight: float | tuple[float, float] = 1.0, pairing: str = "index",
             squared: bool = False) -> torch.Tensor:
    """Two-domain MDD = D_inter(a, b) - w_a Dens_a - w_b Dens_b (see the module docstring).

    `a`, `b` are already in the space MDD is measured in (the official code: softmax of the
    features).
    """
    w_a, w_b = intra_weight if isinstance(intra_weight, tuple) else (intra_weight, intra_weight)
    return (inter_domain_divergence(a, b, pairing, squared)
            + w_a * intra_class_distance(a, labels_a, squared)
            + w_b * intra_class_distance(b, labels_b, squared))


def mdd_multi(embedded: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor], intra_weight: float = 1.0,
              pairing: str = "index", squared: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K-modality MDD: mean pairwise D_inter + intra_weight * sum_k intra-class distance.

    Returns (total, inter, intra). For K = 2 the total equals `mdd_loss`.
    """
    names = list(embedded)
    inter = torch.stack([inter_domain_divergence(embedded[i], embedded[j], pairing, squared)
                         for i, j in modality_pairs(names)]).mean()
    intra = torch.stack([intra_class_distance(embedded[k], labels[k], squared) for k in names]).sum()
    return inter + intra_weight * intra, inter, intra


class ATMObjective(AlignmentObjective):
    """Adversarial tight match: CDAN(+E) adversarial term + mdd_weight * MDD."""

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int, mdd_weight: float = S.mdd_weight,
                 intra_weight: float = S.intra_weight, pairing: str = S.pairing, space: str = S.space,
                 squared: bool = S.squared, entropy_conditioning: bool = S.entropy_conditioning,
                 multi_label: bool = False, **cdan: Any):
        super().__init__()
        self.multi_label = bool(multi_label)
        if pairing not in PAIRINGS:
            raise ValueError(f"method.pairing must be one of {PAIRINGS}, got {pairing!r}")
        if space not in SPACES:
            raise ValueError(f"method.space must be one of {SPACES}, got {space!r}")
        self.modalities = list(modalities)
        self.mdd_weight, self.intra_weight = float(mdd_weight), float(intra_weight)
        self.pairing, self.space, self.squared = pairing, space, bool(squared)
        self.adversarial = CDANObjective(self.modalities, feature_dim, num_classes,
                                         entropy_conditioning=entropy_conditioning, multi_label=multi_label,
                                         **cdan)

    def setup(self, model: UMLModel, total_steps: int) -> None:  # noqa: D102
        super().setup(model, total_steps)
        self.adversarial.setup(model, total_steps)

    def embed(self, model: UMLModel, f: torch.Tensor) -> torch.Tensor:
        """The space the densities are matched in: features, their softmax or class probabilities."""
        if self.space == "softmax_features":
            return F.softmax(f, dim=1)
        if self.space == "probabilities":
            return class_probabilities(classify(model, f), self.multi_label)
        return f

    def forward(self, model: UMLModel, features: Mapping[str, torch.Tensor],  # noqa: D102
                batches: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        total = features[self.modalities[0]].new_zeros(())
        if self.adversarial.trade_off != 0:
            total = total + self.adversarial(model, features, batches)
            self.record(**{k: v[-1] for k, v in self.adversarial.stats.items()})
            self.adversarial.stats = {}
        embedded = {k: self.embed(model, features[k]) for k in self.modalities}
        labels = {k: batches[k][1] for k in self.modalities}
        mdd, inter, intra = mdd_multi(embedded, labels, self.intra_weight, self.pairing, self.squared)
        self.record(mdd=mdd, mdd_inter=inter, mdd_intra=intra)
        return total + self.mdd_weight * mdd


@register_method("mdd")
def run_mdd(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """ATM / Maximum Density Divergence, heterogeneous encoders, shared classifier."""
    require_modalities(data, "mdd")
    p = method_params(cfg, MDDSettings)
    num_classes = next(iter(data.values())).num_classes
    return run_aligned(
        "mdd", data, cfg,
        lambda model, d: ATMObjective(list(d), classifier_in_features(model), num_classes,
                                      multi_label=is_multi_label(d), **p),
    )
