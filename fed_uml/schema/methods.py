"""The `method` settings: one schema per method, each the method's only list of hyperparameters.

Why the defaults live here and nowhere else: a method's defaults once sat both in its module
(a `DEFAULTS` dict) and in its yaml file, held together by a test. Each class below is now the
config group's choice itself (`method=<name>` composes it, `fed_uml.schema.store`), and the
method reads its typed settings from the composed config (`fed_uml.methods.alignment.method_settings`);
a key no class declares is refused when the config is composed or read.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class MethodSettings:
    """What every method has: its name and which model it deploys."""

    name: str = MISSING
    """The method (`method=<name>` picks the whole group)."""
    calibrate: bool = False
    """Deploy the BN-calibrated h_k (Algorithm 1) instead of the model as trained; both
    accuracies are reported either way."""


@dataclass
class UMLSettings(MethodSettings):
    """UML (Algorithm 1): one shared backbone, a projection per modality, BN calibration."""

    name: str = "uml"
    calibrate: bool = True


@dataclass
class UnimodalSettings(MethodSettings):
    """The baseline: one model per modality, trained alone.

    Deployed as trained (its BN statistics already match its modality).
    """

    name: str = "unimodal"
    budget: str = "matched"
    """matched: each modality's model takes the optimiser steps that modality gets inside UML
    on the same data (an epoch = one pass over the largest modality); epochs: an epoch is one
    pass over its own data (fewer steps for a small modality)."""


@dataclass
class PooledSettings(MethodSettings):
    """The positive control's upper reference (fed_uml/methods/pooled.py).

    One model trained on the union of the modalities' data, for modalities that are parts of ONE
    sensor (same bands).
    """

    name: str = "pooled"


@dataclass
class GradientReversalSettings(MethodSettings):
    """The gradient-reversal coefficient lambda of every adversarial method.

    See fed_uml/methods/alignment.py grl_coefficient.
    """

    grl_schedule: str = "budget"
    """budget: lambda = grl_max * (2 / (1 + exp(-grl_gamma * p)) - 1), p = step / total steps of
    this run (Ganin et al.'s published schedule; grl_gamma <= 0: constant grl_max); it ramps to
    ~1 over whatever budget the run has. fixed: lambda = grl_max * (2 / (1 + exp(-step /
    grl_max_iters)) - 1) whatever the budget (the reference code: TLlib's
    WarmStartGradientReverseLayer, thuml/CDAN's calc_coeff), made for 10^4-10^5-step runs."""
    grl_gamma: float = 10.0
    """gamma of the budget schedule."""
    grl_max: float = 1.0
    """The largest lambda."""
    grl_max_iters: int = 1000
    """Steps of the fixed schedule's ramp."""


@dataclass
class DANNSettings(GradientReversalSettings):
    """DANN (Ganin et al., JMLR 2016).

    Gradient reversal + domain discriminator; the domain is the modality. Heterogeneous encoders,
    one shared classifier, both modalities labelled (fed_uml/methods/dann.py).
    """

    name: str = "dann"
    trade_off: float = 1.0
    """Weight w of the domain-adversarial loss added to the summed cross-entropies."""
    hidden: int = 1024
    """Domain discriminator: two hidden layers of this many units, ReLU, dropout (original code: 1024)."""
    dropout: float = 0.5
    """Dropout of the discriminator's hidden layers (original code: 0.5)."""


@dataclass
class CDANSettings(GradientReversalSettings):
    """CDAN (Long et al., NeurIPS 2018).

    Domain discriminator on the multilinear map of encoder features and (detached) class
    predictions, through gradient reversal (fed_uml/methods/cdan.py). Multi-label data: conditioning
    on one sigmoid per class, CDAN+E with the label-set entropy.
    """

    name: str = "cdan"
    trade_off: float = 1.0
    """Weight of the conditional adversarial loss."""
    entropy_conditioning: bool = False
    """CDAN+E: weight samples by 1 + exp(-entropy(prediction)), normalised within each modality
    as in the original CDAN code (false: plain CDAN, as in the study's Table 2)."""
    randomized: bool | None = None
    """Randomized multilinear map (R_f f) * (R_g g) / sqrt(randomized_dim); null: use it only
    when classes * feature width > max_multilinear_dim (the paper's rule)."""
    randomized_dim: int = 1024
    """Output width of the randomized multilinear map."""
    max_multilinear_dim: int = 4096
    """Largest full multilinear map (classes * feature width) before the randomized one is used."""
    hidden: int = 1024
    """Domain discriminator's hidden units (original code: 1024)."""
    dropout: float = 0.5
    """Domain discriminator's dropout (original code: 0.5)."""


@dataclass
class MDDSettings(CDANSettings):
    """MDD = Maximum Density Divergence (Li et al., TPAMI 2020; the method ATM; NOT margin disparity discrepancy).

    CDAN+E adversarial loss + mdd_weight * MDD, MDD = inter-domain distance - intra-class density of
    each modality (fed_uml/methods/mdd.py). Multi-label data: intra-class pairs weighted by their
    shared labels.
    """

    name: str = "mdd"
    mdd_weight: float = 0.01
    """Weight of the MDD loss: 0.01 as in the ATM README's digit commands (train.sh uses
    0.005-0.05 depending on the task)."""
    intra_weight: float = 1.0
    """Weight of each modality's intra-class term (ATM's left_weight / right_weight)."""
    pairing: str = "index"
    """Inter-domain term over index-paired samples of the two batches (official code) or over
    all cross pairs ("all", same factor 1/2)."""
    space: str = "softmax_features"
    """Space MDD is measured in: softmax_features (official code: softmax of the encoder
    features), features (raw encoder features) or probabilities (softmax of the logits)."""
    squared: bool = False
    """Squared Euclidean distances instead of distances (official: false)."""
    entropy_conditioning: bool = True
    """The adversarial part is CDAN+E as in the CDAN paper and code (ATM's copy of the loss has
    the value of plain CDAN, which false reproduces); trade_off 0 trains MDD alone."""


@dataclass
class MCCSettings(MethodSettings):
    """MCC (Jin et al., ECCV 2020).

    Minimum class confusion on every modality's predictions (fed_uml/methods/mcc.py). Multi-label
    data: MCC of each class's two-way decision, averaged.
    """

    name: str = "mcc"
    trade_off: float = 1.0
    """Weight of the MCC loss (averaged over modalities); paper and thuml default 1.0."""
    temperature: float = 2.5
    """Temperature T of the rescaled softmax; paper and thuml default 2.5."""


@dataclass
class ISCASettings(MethodSettings):
    """ISCA (Timilsina, Shrestha, Fu, NeurIPS 2024), adapted end to end.

    Each modality's encoder + a linear shared-component map, adversarial distribution matching of
    the components, whitening penalty, one shared classifier (fed_uml/methods/isca.py).
    """

    name: str = "isca"
    adv_weight: float = 1.0
    """lambda_dist: weight of the maps' adversarial (flipped-label BCE) loss (original run scripts: 1.0)."""
    whiten_weight: float = 1.0
    """lambda: weight of the whitening penalty (1/d_C) ||Cov(c_k) - I||_F, summed over modalities."""
    shared_dim: int | None = None
    """d_C, the shared-component width; null: the encoders' output width (keeps the study's classifier)."""
    hidden: int = 256
    """Discriminator MLP hidden width (two ReLU layers)."""
    label_noise: float = 0.2
    """Discriminator target smoothing: targets 1 - u and u with u ~ U(0, label_noise * (1 - progress))."""
    mcc_weight: float = 0.0
    """MCC on every modality's predictions (the original run scripts: 0.1 on the unlabelled
    target); 0: off, as both modalities are labelled here."""
    mcc_temperature: float = 0.55
    """Temperature of that MCC term."""


# method name -> its settings: the choices of the `method` group
METHODS: dict[str, type[MethodSettings]] = {
    cls.name: cls
    for cls in (UMLSettings, UnimodalSettings, PooledSettings, DANNSettings, CDANSettings, MDDSettings,
                MCCSettings, ISCASettings)
}
