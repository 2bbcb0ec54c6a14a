"""The compared methods (ISCA, DANN, CDAN, MCC, MDD): objectives on tiny inputs with known values,
the heterogeneous-encoder model, the method configs, and a 1-epoch smoke run of each method."""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import pytest
import torch

from fed_uml.centralized import run_centralized
from fed_uml.data import load_dataset
from fed_uml.errors import SettingsError
from fed_uml.federated.config import compose_config
from fed_uml.methods import alignment, available_methods, cdan, dann, get_method, isca, mcc, mdd, register_method
from fed_uml.methods.alignment import (
    build_heterogeneous_model,
    dann_coefficient,
    domain_classification_loss,
    grad_reverse,
    method_params,
    num_stages,
)
from fed_uml.methods.cdan import CDANObjective, entropy_weights, multilinear_map
from fed_uml.methods.dann import DANNObjective
from fed_uml.methods.isca import (
    ISCAObjective,
    add_shared_component_maps,
    whitening_loss,
)
from fed_uml.methods.mcc import MCCObjective, class_confusion, mcc_loss
from fed_uml.methods.mdd import (
    ATMObjective,
    inter_domain_divergence,
    intra_class_distance,
    mdd_loss,
    mdd_multi,
)
from fed_uml.models import create_model, shared_state_keys
from fed_uml.results import SCHEMA_KEYS, read_results
from fed_uml.schema.methods import (
    METHODS,
    CDANSettings,
    DANNSettings,
    GradientReversalSettings,
    ISCASettings,
    MCCSettings,
    MDDSettings,
)
from tests.conftest import tiny_config

BASELINES = ("isca", "dann", "cdan", "mcc", "mdd")


# ----------------------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("coeff", [1.0, 0.3, 2.5])
def test_gradient_reversal_is_identity_forward_and_flips_and_scales_gradient(coeff):
    x = torch.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
    w = torch.tensor([[0.5, 4.0, -1.0]])
    y = grad_reverse(x, coeff)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -coeff * w)
    # the module form does the same
    x2 = x.detach().clone().requires_grad_(True)
    (alignment.GradientReversal(coeff)(x2) * w).sum().backward()
    assert torch.allclose(x2.grad, -coeff * w)


def test_dann_schedule():
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_coefficient(0.5, gamma=10, high=2.0) == pytest.approx(2 * (2 / (1 + math.exp(-5)) - 1))
    assert dann_coefficient(0.3, gamma=0) == 1.0
    assert dann_coefficient(7.0) == dann_coefficient(1.0)  # clamped


def test_grl_schedule_setting():
    # budget (default): the published schedule over this run's steps; fixed: the reference code's ramp
    assert alignment.grl_coefficient(210, 210, "budget") == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert alignment.grl_coefficient(105, 210, "budget") == pytest.approx(dann_coefficient(0.5))
    assert alignment.grl_coefficient(210, 210, "fixed") == pytest.approx(2 / (1 + math.exp(-0.21)) - 1)  # ~0.105
    assert alignment.grl_coefficient(2000, 210, "fixed", max_iters=1000) == pytest.approx(2 / (1 + math.exp(-2)) - 1)
    fixed = alignment.grl_coefficient(50, 100, "fixed", high=2.0, max_iters=50)
    assert fixed == pytest.approx(2 * (2 / (1 + math.exp(-1)) - 1))
    for schema in (DANNSettings, CDANSettings, MDDSettings):
        assert schema.grl_schedule == "budget" and schema.grl_max_iters == 1000
    obj = DANNObjective(["a", "b"], 4, hidden=8, grl_schedule="fixed", grl_max_iters=100)
    obj.setup(None, total_steps=10)
    obj.step = 10
    assert obj.coefficient() == pytest.approx(2 / (1 + math.exp(-0.1)) - 1)
    with pytest.raises(ValueError, match="grl_schedule"):
        DANNObjective(["a", "b"], 4, grl_schedule="linear")
    with pytest.raises(ValueError, match="grl_max_iters"):
        CDANObjective(["a", "b"], 4, 3, grl_schedule="fixed", grl_max_iters=0)
    atm = ATMObjective(["a", "b"], 4, 3, grl_schedule="fixed")
    assert atm.adversarial.grl_schedule == "fixed"


def test_domain_loss_known_values_and_balance():
    # uninformative 2-way discriminator: log 2 whatever the batch sizes
    logits = torch.zeros(5, 2)
    domains = torch.tensor([0, 0, 0, 0, 1])
    assert domain_classification_loss(logits, domains).item() == pytest.approx(math.log(2))
    # balanced over domains: domain 0 perfectly classified (loss ~0), domain 1 at log 2 -> mean log2/2
    logits = torch.tensor([[30.0, 0.0], [30.0, 0.0], [30.0, 0.0], [0.0, 0.0]])
    domains = torch.tensor([0, 0, 0, 1])
    assert domain_classification_loss(logits, domains).item() == pytest.approx(math.log(2) / 2, abs=1e-6)


def _features(n=6, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, d, generator=g), "b": torch.randn(n, d, generator=g) + 1.0}


def test_dann_objective_trains_discriminator_and_reverses_encoder_gradient():
    torch.manual_seed(0)
    obj = DANNObjective(["a", "b"], feature_dim=4, hidden=8, dropout=0.0)
    obj.setup(None, total_steps=4)
    obj.step = 2  # progress 0.5
    coeff = obj.coefficient()
    assert coeff == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    feats = {k: v.requires_grad_(True) for k, v in _features().items()}
    loss = obj.forward(None, feats, {})
    loss.backward()
    # the same loss without reversal: the encoder gradient is exactly -coeff times it
    ref = {k: v.detach().clone().requires_grad_(True) for k, v in _features().items()}
    f = torch.cat([ref["a"], ref["b"]])
    domains = torch.tensor([0] * 6 + [1] * 6)
    domain_classification_loss(obj.discriminator(f), domains).backward()
    for k in ("a", "b"):
        assert torch.allclose(feats[k].grad, -coeff * ref[k].grad, atol=1e-6)
    # the discriminator gets the plain (descent) gradient of its classification loss
    assert all(p.grad is not None for p in obj.discriminator.parameters())
    assert obj.trainable_parameters() == list(obj.discriminator.parameters())


# ----------------------------------------------------------------------------- CDAN


def test_multilinear_map_is_the_flattened_outer_product():
    f = torch.tensor([[1.0, 2.0, 3.0]])
    g = torch.tensor([[0.5, 2.0]])
    out = multilinear_map(f, g)
    assert out.shape == (1, 6)
    assert torch.equal(out, torch.tensor([[0.5, 1.0, 1.5, 2.0, 4.0, 6.0]]))
    f, g = torch.randn(5, 7), torch.softmax(torch.randn(5, 3), 1)
    out = multilinear_map(f, g)
    assert out.shape == (5, 3 * 7)
    for n in range(5):
        for c in range(3):
            for d in range(7):
                assert out[n, c * 7 + d] == pytest.approx((g[n, c] * f[n, d]).item())


def test_cdan_uses_the_randomized_map_above_4096_and_detaches_predictions():
    small = CDANObjective(["a", "b"], feature_dim=8, num_classes=3, hidden=16)
    assert small.random_map is None and small.discriminator.net[0].in_features == 24
    big = CDANObjective(["a", "b"], feature_dim=512, num_classes=10, hidden=16, randomized_dim=64)
    assert big.random_map is not None and big.discriminator.net[0].in_features == 64
    assert big.random_map(torch.randn(3, 512), torch.rand(3, 10)).shape == (3, 64)
    assert not any(b.requires_grad for b in big.random_map.buffers())
    # the conditioning g carries no gradient: the classifier is untouched by the CDAN loss
    model = create_model("small_cnn", {"a": 1, "b": 1}, num_classes=3, specific_layers=4, width=2)
    obj = CDANObjective(["a", "b"], feature_dim=8, num_classes=3, hidden=16, dropout=0.0)
    obj.setup(model, 10)
    obj.step = 10
    feats = {k: v.requires_grad_(True) for k, v in _features(d=8).items()}
    obj.forward(model, feats, {}).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert feats["a"].grad is not None and feats["a"].grad.abs().sum() > 0


def test_cdan_entropy_weights():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
    domains = torch.tensor([0, 0, 1, 1])
    w = entropy_weights(probs, domains)
    for d in (0, 1):
        assert w[domains == d].mean().item() == pytest.approx(1.0)
    assert w[0] > w[1] and w[2] > w[3]  # the confident sample of each modality counts more
    raw = 1 + torch.exp(-torch.tensor([0.0, math.log(2)]))  # entropies 0 and log 2 (eps aside)
    assert (w[0] / w[1]).item() == pytest.approx((raw[0] / raw[1]).item(), rel=1e-4)


# ----------------------------------------------------------------------------- MCC


def test_mcc_vanishes_for_confident_diagonal_confusion_and_is_larger_for_uniform():
    c = 4
    confident = 1000.0 * torch.eye(c)  # one confident sample per class
    assert mcc_loss(confident).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(class_confusion(confident), torch.eye(c), atol=1e-6)
    uniform = torch.zeros(6, c)
    assert mcc_loss(uniform).item() == pytest.approx((c - 1) / c)
    middle = 2.0 * torch.eye(c)
    assert 0 < mcc_loss(middle).item() < mcc_loss(uniform).item()
    # category normalisation: every column of the confusion matrix sums to 1
    assert torch.allclose(class_confusion(torch.randn(9, c)).sum(0), torch.ones(c), atol=1e-6)
    # the temperature matters: a higher T softens confident predictions, more confusion
    assert mcc_loss(5 * torch.eye(c), temperature=10) > mcc_loss(5 * torch.eye(c), temperature=1)


def test_mcc_entropy_weighting_known_value():
    # two samples, two classes: one confident (entropy ~0), one uniform (entropy log 2)
    logits = torch.tensor([[1000.0, 0.0], [0.0, 0.0]])
    w = 1 + torch.exp(-torch.tensor([0.0, math.log(2)]))
    w = 2 * w / w.sum()
    y = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    conf = (y * w.unsqueeze(1)).t() @ y
    conf = conf / conf.sum(0, keepdim=True)
    expected = (conf.sum() - conf.trace()) / 2
    assert mcc_loss(logits, temperature=1.0).item() == pytest.approx(expected.item(), rel=1e-3)


def test_mcc_entropy_weights_carry_no_gradient():
    """Issue 12 (bug): the sample weights 1 + exp(-H) are constants for the gradient, as in the references
    (thuml TLlib `MinimumClassConfusionLoss` detaches the entropy). Before the fix the loss values agreed but
    the gradient w.r.t. the logits did not."""
    g = torch.Generator().manual_seed(3)
    logits = (2 * torch.randn(7, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    mcc_loss(logits).backward()
    z = logits.detach().clone().requires_grad_(True)
    y = torch.softmax(z / 2.5, dim=1)
    h = -(y * torch.log(y + 1e-5)).sum(1)
    w = 1 + torch.exp(-h.detach())  # the detached form
    conf = (y * (7 * w / w.sum()).unsqueeze(1)).t() @ y
    conf = conf / conf.sum(0, keepdim=True)
    ((conf.sum() - conf.trace()) / 4).backward()
    assert torch.allclose(logits.grad, z.grad, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- MDD (maximum density divergence)


def test_mdd_known_values():
    # D_inter is the official code's sum of the paired distances over the concatenated batch 2B, i.e. half
    # the mean distance (these expected values were 5, 25, 0.5 and 20/4 before issue 12's fix: the mean)
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0]])
    assert inter_domain_divergence(a, b).item() == pytest.approx(5.0 / 2)
    assert inter_domain_divergence(a, b, squared=True).item() == pytest.approx(25.0 / 2)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    assert intra_class_distance(x, torch.tensor([0, 0, 1])).item() == pytest.approx(1.0)
    assert intra_class_distance(x, torch.tensor([0, 1, 2])).item() == 0.0  # no same-class pair
    # index pairing vs every cross pair
    a = torch.tensor([[0.0], [10.0]])
    b = torch.tensor([[1.0], [10.0]])
    assert inter_domain_divergence(a, b, "index").item() == pytest.approx(1 / 4)
    assert inter_domain_divergence(a, b, "all").item() == pytest.approx((1 + 10 + 9 + 0) / 4 / 2)


def test_mdd_inter_term_is_the_sum_of_paired_distances_over_the_concatenated_batch():
    """Issue 12 (bug): lijin118/ATM loss.mdd_loss sums the B paired distances and divides by the size 2B of
    the concatenated batch; fed-uml took the mean (twice that). By hand, B = 2: distances 5 and 1."""
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert inter_domain_divergence(a, b).item() == pytest.approx((5.0 + 1.0) / (2 * 2))
    # + the intra-class terms: a's one same-class pair is 1 apart, b has none
    total = mdd_loss(a, b, torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert total.item() == pytest.approx(6.0 / 4 + 1.0)


def test_mdd_zero_for_identical_tight_sets_and_grows_as_domains_separate():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    tight = centres[labels]  # every class collapsed to a point
    assert mdd_loss(tight, tight.clone(), labels, labels).item() == 0.0
    # identical but spread sets: only the intra-class terms (minus the densities) remain
    spread = tight + torch.tensor([[0.5, 0.0], [-0.5, 0.0]] * 3)
    intra = intra_class_distance(spread, labels)
    assert intra.item() == pytest.approx(1.0)
    assert mdd_loss(spread, spread.clone(), labels, labels).item() == pytest.approx(2 * intra.item())
    # tighter classes: higher density, lower MDD
    assert mdd_loss(tight, tight, labels, labels) < mdd_loss(spread, spread, labels, labels)
    # moving one domain away increases MDD monotonically, for both pairings
    for pairing in ("index", "all"):
        values = [mdd_loss(spread, spread + s, labels, labels, pairing=pairing).item() for s in (0.0, 1.0, 3.0, 9.0)]
        assert all(x < y for x, y in zip(values, values[1:])), values


def test_mdd_gradient_is_finite_at_zero_distance_and_multi_modal_form():
    x = torch.zeros(4, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    mdd_loss(x, x, labels, labels).backward()
    assert torch.isfinite(x.grad).all()
    g = torch.Generator().manual_seed(1)
    emb = {k: torch.rand(5, 3, generator=g) for k in "abc"}
    lab = {k: torch.tensor([0, 1, 0, 1, 2]) for k in "abc"}
    two = {k: emb[k] for k in "ab"}
    total, _, _ = mdd_multi(two, lab)
    assert total.item() == pytest.approx(mdd_loss(emb["a"], emb["b"], lab["a"], lab["b"]).item())
    total, inter, intra = mdd_multi(emb, lab)
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    assert inter.item() == pytest.approx(sum(inter_domain_divergence(emb[i], emb[j]).item() for i, j in pairs) / 3)
    assert intra.item() == pytest.approx(sum(intra_class_distance(emb[k], lab[k]).item() for k in "abc"))


def test_atm_objective_adds_weighted_mdd_to_cdan_e():
    torch.manual_seed(0)
    model = create_model("small_cnn", {"a": 1, "b": 1}, num_classes=3, specific_layers=4, width=2)
    feats = _features(d=8)
    batches = {k: (None, torch.tensor([0, 0, 1, 1, 2, 2])) for k in feats}
    only_mdd = ATMObjective(["a", "b"], 8, 3, mdd_weight=0.5, trade_off=0.0)
    expected = mdd_loss(torch.softmax(feats["a"], 1), torch.softmax(feats["b"], 1), batches["a"][1], batches["b"][1])
    assert only_mdd.forward(model, feats, batches).item() == pytest.approx(0.5 * expected.item(), rel=1e-6)
    full = ATMObjective(["a", "b"], 8, 3, mdd_weight=0.5, hidden=16, dropout=0.0)
    assert full.adversarial.entropy_conditioning
    full.setup(model, 10)
    assert full.forward(model, feats, batches).item() > 0.5 * expected.item()  # + the adversarial term
    with pytest.raises(ValueError, match="pairing"):
        ATMObjective(["a", "b"], 8, 3, pairing="diagonal")


# ----------------------------------------------------------------------------- ISCA


def test_isca_whitening_known_values():
    c = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # centred, (1/N) C^T C = I
    assert whitening_loss(c).item() == pytest.approx(0.0, abs=1e-7)
    assert whitening_loss(c + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # batch-centred first
    # covariance 4 I: (1/2) ||3 I||_F = 1.5 sqrt(2)
    assert whitening_loss(2 * c).item() == pytest.approx(1.5 * math.sqrt(2))
    # rank-deficient: cov = diag(2, 0): (1/2) sqrt(1 + 1)
    d = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]) * math.sqrt(2)
    assert whitening_loss(d).item() == pytest.approx(math.sqrt(2) / 2)


def _isca(label_noise=0.0, **kw):
    obj = ISCAObjective(["a", "b"], shared_dim=2, hidden=8, label_noise=label_noise, **kw)
    obj.setup(None, total_steps=100)
    return obj


def test_isca_game_known_values_and_who_gets_which_gradient():
    torch.manual_seed(0)
    obj = _isca()
    for disc in obj.discriminators.values():  # an uninformative critic: logit 0 everywhere
        torch.nn.init.zeros_(disc.net[-1].weight)
        torch.nn.init.zeros_(disc.net[-1].bias)
    feats = {"a": torch.tensor([[1.0, 1.0], [-1.0, -1.0]], requires_grad=True),
             "b": torch.tensor([[1.0, -1.0], [-1.0, 1.0]], requires_grad=True)}
    critic, maps = obj.game(feats)
    assert critic.item() == pytest.approx(2 * math.log(2)) and maps.item() == pytest.approx(2 * math.log(2))
    loss = obj.forward(None, feats, {})
    white = whitening_loss(feats["a"]) + whitening_loss(feats["b"])
    assert loss.item() == pytest.approx(4 * math.log(2) + white.item(), rel=1e-6)
    loss.backward()
    # the critic's gradient comes from the critic loss alone (the maps' loss holds it fixed) ...
    disc = obj.discriminators["a__b"]
    got = [p.grad.clone() for p in disc.parameters()]
    disc.zero_grad()
    ta, tb = torch.ones(2, 1), torch.zeros(2, 1)
    obj.critic_loss(disc, feats["a"], feats["b"], ta, tb).backward()
    assert all(torch.allclose(g, p.grad) for g, p in zip(got, disc.parameters()))
    # ... and the components' gradient from the maps' loss and the whitening alone
    fa = feats["a"].detach().clone().requires_grad_(True)
    fb = feats["b"].detach().clone().requires_grad_(True)
    (obj.map_loss(disc, fa, fb, tb, ta) + whitening_loss(fa) + whitening_loss(fb)).backward()  # flipped targets
    assert torch.allclose(feats["a"].grad, fa.grad) and torch.allclose(feats["b"].grad, fb.grad)
    assert obj.trainable_parameters() == list(obj.discriminators.parameters())


def test_isca_runs_with_unequal_batch_sizes():
    """Issue 12 (bug): the smoothed targets were drawn for one modality's batch and paired with the other's,
    so a batch of 5 against one of 3 stopped with a size error (as does any modality smaller than the batch)."""
    torch.manual_seed(0)
    obj = _isca(label_noise=0.2)
    feats = {"a": torch.randn(5, 2, requires_grad=True), "b": torch.randn(3, 2, requires_grad=True)}
    loss = obj.forward(None, feats, {})
    loss.backward()
    assert torch.isfinite(loss) and feats["a"].grad.shape == (5, 2) and feats["b"].grad.shape == (3, 2)
    critic, maps = obj.game(feats)
    assert torch.isfinite(critic) and torch.isfinite(maps)


def test_isca_trains_when_a_modality_is_smaller_than_the_batch():
    # 10 sar against 20 rgb training scenes with batch 32 (issue 12: `samples_per_class={sar:2,rgb:4}`)
    cfg = tiny_config("isca", samples_per_class={"sar": 1, "rgb": 2}, epochs=1)
    cfg["training"]["batch_size"] = 32
    results = run_centralized(cfg)
    assert set(results["modalities"]) == {"sar", "rgb"}


def test_isca_critic_learns_to_separate_and_the_maps_then_pay_for_it():
    torch.manual_seed(0)
    obj = _isca()
    feats = {"a": torch.randn(16, 2) + 3.0, "b": torch.randn(16, 2) - 3.0}
    opt = torch.optim.Adam(obj.trainable_parameters(), lr=0.05)
    first = None
    for _ in range(60):
        critic, _ = obj.game(feats)
        first = critic.item() if first is None else first
        opt.zero_grad()
        critic.backward()
        opt.step()
    assert critic.item() < first and critic.item() < 0.2
    # a discriminator that separates the modalities makes the flipped-label (maps') loss large
    _, maps = obj.game(feats)
    assert maps.item() > 2 * math.log(2)
    # ... and its gradient moves the components towards each other
    fa = feats["a"].clone().requires_grad_(True)
    obj.game({"a": fa, "b": feats["b"]})[1].backward()
    assert (fa.grad.sum(0) > 0).all()  # descent (-grad) moves modality a towards b (negative coordinates)


def test_isca_optional_mcc_term():
    torch.manual_seed(0)
    head = torch.nn.Linear(2, 3)
    model = type("M", (), {"backbone": head})()
    feats = {"a": torch.randn(6, 2), "b": torch.randn(4, 2)}
    base = _isca(adv_weight=0.0).forward(model, feats, {})
    with_mcc = _isca(adv_weight=0.0, mcc_weight=0.1, mcc_temperature=0.55).forward(model, feats, {})
    expected = 0.1 * (mcc_loss(head(feats["a"]), 0.55) + mcc_loss(head(feats["b"]), 0.55)) / 2
    assert (with_mcc - base).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ISCASettings.mcc_weight == 0.0  # off by default: both modalities are labelled


def test_isca_maps_are_appended_to_each_encoder():
    model = create_model("small_cnn", {"a": 1, "b": 2}, num_classes=3, specific_layers=4, width=2)
    assert add_shared_component_maps(model) == 8
    out = model.projection("b")(torch.randn(4, 2, 8, 8))
    assert out.shape == (4, 8) and model(torch.randn(4, 1, 8, 8), "a").shape == (4, 3)
    assert isinstance(model.projection("a")[-1], isca.SharedComponentMap)
    model = create_model("small_cnn", {"a": 1, "b": 2}, num_classes=3, specific_layers=4, width=2)
    assert add_shared_component_maps(model, 5) == 5
    assert model.projection("a")(torch.randn(4, 1, 8, 8)).shape == (4, 5)
    assert model(torch.randn(4, 2, 8, 8), "b").shape == (4, 3)


# ----------------------------------------------------------------------------- model, settings, configs


@pytest.mark.parametrize("backbone,stages", [("small_cnn", 4), ("resnet18", 5)])
def test_heterogeneous_model_shares_only_the_classifier(backbone, stages):
    data = load_dataset(tiny_config()["dataset"])
    cfg = {"backbone": backbone, "specific_layers": 1}
    if backbone == "small_cnn":
        cfg["width"] = 4
    assert num_stages(cfg) == stages
    model = build_heterogeneous_model(cfg, data)
    assert all(len(p) == stages for p in model.projections.values())
    assert [type(m).__name__ for m in model.backbone] == ["Linear"]
    assert all(k.startswith("backbone.0.") for k in shared_state_keys(model))


def test_unknown_method_setting_is_an_error():
    known = r"unknown setting 'method\.trade_of'; the settings of method are: .*trade_off"
    with pytest.raises(SettingsError, match=known):
        method_params({"method": {"name": "dann", "trade_of": 2}}, DANNSettings)
    assert method_params({"method": {"name": "dann", "trade_off": 2}}, DANNSettings)["trade_off"] == 2
    with pytest.raises(SettingsError, match=r"method\.trade_of.*Key 'trade_of' not in 'DANNSettings'"):
        compose_config(["method=dann", "method.trade_of=2"])


OBJECTIVES = [(isca, ISCAObjective, ISCASettings), (dann, DANNObjective, DANNSettings),
              (cdan, CDANObjective, CDANSettings), (mcc, MCCObjective, MCCSettings), (mdd, ATMObjective, MDDSettings)]


@pytest.mark.parametrize("module,objective,schema", OBJECTIVES, ids=[s.name for _, _, s in OBJECTIVES])
def test_methods_take_their_defaults_from_their_schema_only(module, objective, schema):
    """A compared method's hyperparameters are its schema's fields with their defaults: the
    method group composes to them, the method reads exactly them, and its objective's own
    keyword defaults are the same values (no second list of defaults anywhere)."""
    name = schema.name
    assert METHODS[name] is schema and not hasattr(module, "DEFAULTS")
    defaults = dataclasses.asdict(schema())
    cfg = compose_config([f"method={name}"])
    assert cfg["method"] == defaults
    params = method_params(cfg, schema)
    assert params == {k: v for k, v in defaults.items() if k not in ("name", "calibrate")}
    signature = inspect.signature(objective.__init__).parameters
    for key, value in params.items():
        if key in signature and signature[key].default is not inspect.Parameter.empty:
            assert signature[key].default == value, (name, key)


def test_methods_are_registered():
    assert set(BASELINES) | {"uml", "unimodal", "pooled"} <= set(available_methods())
    assert get_method("dann") is dann.run_dann
    with pytest.raises(ValueError, match=r"unknown method 'dan' \(setting method=...\); available: \[.*'dann'"):
        get_method("dan")
    with pytest.raises(ValueError, match="method 'dann' is already registered"):
        register_method("dann")(lambda data, cfg: {})
    assert get_method("dann") is dann.run_dann  # the refused duplicate replaced nothing


def test_methods_with_gradient_reversal_share_its_defaults():
    grl = {k: v for k, v in dataclasses.asdict(GradientReversalSettings()).items() if k.startswith("grl_")}
    assert len(grl) == 4
    for schema in (DANNSettings, CDANSettings, MDDSettings):
        assert issubclass(schema, GradientReversalSettings)
        assert {k: v for k, v in dataclasses.asdict(schema()).items() if k in grl} == grl
    objectives = (DANNObjective(["a", "b"], 4), CDANObjective(["a", "b"], 4, 3),
                  ATMObjective(["a", "b"], 4, 3).adversarial)
    for obj in objectives:
        assert {k: getattr(obj, k) for k in grl} == grl
    with pytest.raises(TypeError, match="grl_gama"):
        DANNObjective(["a", "b"], 4, grl_gama=5.0)


# ----------------------------------------------------------------------------- smoke: 1 epoch, results schema


@pytest.mark.parametrize("method", BASELINES)
def test_each_method_trains_one_epoch_and_writes_results(method, tmp_path: Path):
    cfg = tiny_config(method, epochs=1)
    results = run_centralized(cfg, tmp_path)
    saved = read_results(tmp_path / "results.json")
    assert all(k in saved for k in SCHEMA_KEYS)
    assert saved["method"] == method and saved["federated"] is False
    assert set(saved["modalities"]) == {"sar", "rgb"}
    for m in saved["modalities"].values():
        for key in ("accuracy", "accuracy_before_calibration", "accuracy_after_calibration"):
            assert 0.0 <= m[key] <= 1.0
        assert m["accuracy"] == m["accuracy_before_calibration"]  # calibrate: false by default
    assert saved["config"]["model"]["specific_layers"] == 4  # heterogeneous encoders recorded
    assert results["mean_accuracy"] == pytest.approx(saved["mean_accuracy"])


@pytest.mark.parametrize("method", BASELINES)
def test_each_method_handles_three_modalities(method):
    cfg = tiny_config(method, modalities=("sar", "rgb", "ms"), epochs=1)
    cfg["method"]["calibrate"] = True
    results = run_centralized(cfg)
    assert set(results["modalities"]) == {"sar", "rgb", "ms"}
    for m in results["modalities"].values():
        assert m["accuracy"] == m["accuracy_after_calibration"]


def test_alignment_needs_two_modalities():
    with pytest.raises(ValueError, match="needs at least 2"):
        run_centralized(tiny_config("dann", modalities=("sar",), epochs=1))


def test_runner_selects_the_methods_through_hydra():
    from hydra import compose, initialize_config_dir

    from fed_uml.federated.config import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for name in BASELINES:
            cfg = compose(config_name="config", overrides=[f"method={name}"])
            assert cfg.method.name == name
        cfg = compose(config_name="config", overrides=["method=cdan", "method.entropy_conditioning=true"])
        assert cfg.method.entropy_conditioning is True
