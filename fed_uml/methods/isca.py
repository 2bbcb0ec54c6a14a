"""ISCA: identifiable shared component analysis of unpaired multimodal mixtures.

Timilsina, Shrestha, Fu, NeurIPS 2024; official code github.com/XiaoFuLab/Shared-Component-Analysis.

The original. Each modality q is a linear mixture x^(q) = A^(q) [c; p^(q)] of a shared
component c and a private one. ISCA learns linear maps Q^(q) (d_C x d^(q)) such that the
distributions of Q^(1) x^(1) and Q^(2) x^(2) match, under the whitening constraint
Q^(q) E[x x^T] Q^(q)^T = I. In practice (the code's domain-adaptation experiment,
`Domain Adaptation/train.py`) the x^(q) are frozen, batch-centred pre-trained features (ResNet-50
in the run scripts), one bias-free linear map Z is shared by both domains (they come from the
same feature extractor), the distribution match is a GAN game with a discriminator f (sigmoid +
BCE; f is trained on the components with labels 1 for domain 1 and 0 for domain 2, the map with
the labels flipped, alternating with separate Adam optimisers; targets smoothed by up to 0.2 with
a noise that decays linearly, per epoch, to 0), the constraint is a penalty
(1/d_C) ||(1/N) C^T C - I||_F per domain, a classifier on c is trained with the source labels,
and an MCC term (weight 0.1) on the target's predictions:

    L_maps = lambda_dist (BCE(f(c1), 0) + BCE(f(c2), 1)) + w_cls CE + lambda (W(c1) + W(c2)) + 0.1 MCC_T(c2)

The published run scripts (run_office31.sh, run_officehome.sh) use lambda_dist = 1, lambda = 1,
w_cls = 0.1, a linear classifier (`--class_layers 1`), MCC temperature T = 0.55, d_C = 256
(Office-31) / 512 (OfficeHome), batch 64, 10 epochs of 125 steps, Adam with lr 2e-4 for Z and 2e-5
for f, and 0.02 for the classifier with inverse decay (a LambdaLR factor that repeats the 0.02, so
the effective rate starts at 4e-4). The argparse defaults differ (w_cls 0.5, a 2-layer MLP
classifier, lr 1e-4 / 1e-5); they are not what the paper ran.

Our end-to-end adaptation (what differs):
- the frozen feature extractor is replaced by each modality's own trainable encoder E_k
  (all stages of the configured backbone, trained from scratch jointly with everything
  else); Q_k is a bias-free Linear (width -> d_C) appended to E_k, preceded by a
  BatchNorm1d without affine parameters that does the original's per-batch mean
  centring (and per-dimension scaling, which Q_k can undo) and has running statistics for
  test time. The shared component c_k = Q_k(BN(E_k(x))) is what the shared classifier
  reads, so the encoder output `features[k]` seen by the hook is c_k;
- one map Q_k per modality (the paper's multimodal formulation) instead of the code's single Z:
  there both domains share one feature extractor, here every modality has its own encoder and
  input bands, so there is no common input space for one map to act on;
- both modalities are labelled: the classification loss covers both (weight 1 each, the
  runner's loss) instead of the source only (weight 0.1); the classifier is the study's shared
  linear classifier (linear, as in the run scripts);
- MCC: off by default (`mcc_weight` 0). In the original it regularises the unlabelled target's
  predictions; here no modality is unlabelled, and MCC is a compared method of its own.
  `method.mcc_weight=0.1` (T = `mcc_temperature`, 0.55) adds it as in the run scripts, on every
  modality's predictions (averaged);
- the discriminator is a smaller MLP (d_C -> hidden -> hidden -> 1, ReLU, `hidden` 256; the
  original's is deeper and wider, 6 layers from 1024 down to 64 units with LeakyReLU 0.2), not
  tuned against the original's, sized for the study's short budgets and from-scratch encoders;
  logits with BCE-with-logits (the same loss as sigmoid + BCE, numerically safer);
- instead of alternating steps with separate Adam optimisers (tuned for thousands of steps on
  frozen features), one backward pass per training step carries both players' losses: the critic
  loss on detached components (it reaches only the discriminator) and the maps' flipped-label loss
  through the discriminator with its parameters held fixed (it reaches only encoders and maps);
  the runner's optimiser updates both simultaneously with the same learning rate and schedule.
  (A first version with alternating steps and a separate constant-rate critic optimiser
  collapsed under the runner's cosine schedule: late in training the critic kept its full rate
  while the encoders' rate went to zero, the maps' loss exploded and training accuracy fell.);
- the target noise decays linearly per step (original: per epoch), and each modality's targets
  are drawn for its own batch, so the modalities' batches may differ in size;
- K > 2 modalities: one discriminator per pair of modalities (the two-modality game on
  every pair, averaged); for K = 2 exactly the original game.

Multi-label data: nothing of ISCA's game or whitening reads the labels; the optional MCC term
takes its multi-label form (`mcc.multi_label_mcc_loss`, per-class two-way decisions).

Hyperparameters (`fed_uml.schema.methods.ISCASettings`, their only declaration): adv_weight
(lambda_dist, 1.0), whiten_weight (lambda, 1.0), shared_dim (d_C; null = the encoders' width,
keeping the study's classifier), hidden (256), label_noise (0.2; 0 disables), mcc_weight
(0.0), mcc_temperature (0.55).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fed_uml.methods.alignment import (
    AlignmentObjective,
    DomainDiscriminator,
    classifier_in_features,
    classify,
    frozen_call,
    is_multi_label,
    method_params,
    modality_pairs,
    require_modalities,
    run_aligned,
)
from fed_uml.methods.mcc import task_mcc_loss
from fed_uml.methods.registry import register_method
from fed_uml.modality import ModalityData
from fed_uml.models import Backbone, UMLModel
from fed_uml.schema.methods import ISCASettings

S = ISCASettings  # the defaults of the objective's arguments


def whitening_loss(c: torch.Tensor) -> torch.Tensor:
    """ISCA's constraint penalty (1/d) || (1/N) C~^T C~ - I ||_F, with C~ the batch-centred components."""
    c = c - c.mean(dim=0, keepdim=True)
    n, d = c.shape
    cov = c.t() @ c / n
    return torch.linalg.matrix_norm(cov - torch.eye(d, device=c.device, dtype=c.dtype)) / d


class SharedComponentMap(nn.Sequential):
    """Q_k o centring: BatchNorm1d (no affine) then a bias-free Linear, appended to encoder k."""

    def __init__(self, in_features: int, shared_dim: int):
        super().__init__(nn.BatchNorm1d(in_features, affine=False), nn.Linear(in_features, shared_dim, bias=False))


def add_shared_component_maps(model: UMLModel, shared_dim: int | None = None) -> int:
    """Append a SharedComponentMap to every projection; replace the classifier if d_C changes it.

    Returns d_C.
    """
    width = classifier_in_features(model)
    d = int(shared_dim) if shared_dim else width
    for k in model.modalities:
        model.projection(k).append(SharedComponentMap(width, d))
    if d != width:
        model.backbone = Backbone(nn.Linear(d, model.num_classes))
    return d


class ISCAObjective(AlignmentObjective):
    """Critic loss + adversarial, whitening and MCC terms, in one backward pass.

    Critic loss (on detached components) + adv_weight * maps' loss (through the fixed critic) +
    whiten_weight * whitening (+ mcc_weight * MCC): the critics are trained by the runner's
    optimiser (with its learning-rate schedule), the encoders and maps only by the other terms.
    """

    def __init__(self, modalities: list[str], shared_dim: int, adv_weight: float = S.adv_weight,
                 whiten_weight: float = S.whiten_weight, hidden: int = S.hidden, label_noise: float = S.label_noise,
                 mcc_weight: float = S.mcc_weight, mcc_temperature: float = S.mcc_temperature,
                 multi_label: bool = False):
        super().__init__()
        self.multi_label = bool(multi_label)
        self.modalities = list(modalities)
        self.adv_weight, self.whiten_weight = float(adv_weight), float(whiten_weight)
        self.label_noise = float(label_noise)
        self.mcc_weight, self.mcc_temperature = float(mcc_weight), float(mcc_temperature)
        self.pairs = modality_pairs(self.modalities)
        self.discriminators = nn.ModuleDict(
            {self.key(a, b): DomainDiscriminator(shared_dim, int(hidden), 1, dropout=0.0) for a, b in self.pairs}
        )

    @staticmethod
    def key(a: str, b: str) -> str:
        """The key of the pair (a, b) in the module dicts."""
        return f"{a}__{b}"

    def targets(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Smoothed discriminator targets (~1, ~0), noise decaying linearly to 0 over training."""
        scale = self.label_noise * (1.0 - self.progress)
        ones = 1.0 - scale * torch.rand(n, 1) if scale > 0 else torch.ones(n, 1)
        zeros = scale * torch.rand(n, 1) if scale > 0 else torch.zeros(n, 1)
        return ones.to(like), zeros.to(like)

    @staticmethod
    def critic_loss(disc: nn.Module, ca: torch.Tensor, cb: torch.Tensor, ta: torch.Tensor,
                    tb: torch.Tensor) -> torch.Tensor:
        """Discriminator loss: modality a labelled ~1, modality b ~0, on detached components."""
        return (F.binary_cross_entropy_with_logits(disc(ca.detach()), ta)
                + F.binary_cross_entropy_with_logits(disc(cb.detach()), tb))

    @staticmethod
    def map_loss(disc: nn.Module, ca: torch.Tensor, cb: torch.Tensor, ta: torch.Tensor,
                 tb: torch.Tensor) -> torch.Tensor:
        """The maps' loss: the same discriminator (held fixed) with the labels flipped.

        `ta` and `tb` are the (already flipped) targets of a's and b's samples: ~0 for a, ~1 for b.
        """
        return (F.binary_cross_entropy_with_logits(frozen_call(disc, ca), ta)
                + F.binary_cross_entropy_with_logits(frozen_call(disc, cb), tb))

    def game(self, features: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(critic loss, maps' loss), each averaged over the modality pairs.

        Every target has the length of the batch it labels, so the modalities' batches may differ in
        size (a modality smaller than the batch size, or the last batch of an epoch).
        """
        critic, maps = [], []
        for a, b in self.pairs:
            disc = self.discriminators[self.key(a, b)]
            ca, cb = features[a], features[b]
            ones_a, zeros_a = self.targets(len(ca), ca)
            ones_b, zeros_b = self.targets(len(cb), cb)
            critic.append(self.critic_loss(disc, ca, cb, ones_a, zeros_b))
            maps.append(self.map_loss(disc, ca, cb, zeros_a, ones_b))
        return torch.stack(critic).mean(), torch.stack(maps).mean()

    def forward(self, model: UMLModel, features: Mapping[str, torch.Tensor],  # noqa: D102
                batches: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        white = torch.stack([whitening_loss(features[k]) for k in self.modalities]).sum()
        total = self.whiten_weight * white
        if self.adv_weight != 0:
            critic, maps = self.game(features)
            total = total + critic + self.adv_weight * maps
            self.record(critic_loss=critic, map_loss=maps)
        if self.mcc_weight != 0:
            mcc = torch.stack([task_mcc_loss(classify(model, features[k]), self.mcc_temperature, self.multi_label)
                               for k in self.modalities]).mean()
            total = total + self.mcc_weight * mcc
            self.record(mcc=mcc)
        self.record(whitening=white)
        return total


@register_method("isca")
def run_isca(data: Mapping[str, ModalityData], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """ISCA adapted end to end: heterogeneous encoders + linear shared-component maps + shared classifier."""
    require_modalities(data, "isca")
    p = method_params(cfg, ISCASettings)
    shared_dim = p.pop("shared_dim")
    dims = {}

    def prepare(model: UMLModel) -> None:
        dims["d"] = add_shared_component_maps(model, shared_dim)

    return run_aligned(
        "isca", data, cfg, lambda model, d: ISCAObjective(list(d), dims["d"], multi_label=is_multi_label(d), **p),
        prepare_model=prepare,
    )
