"""Parity of the compared methods' objectives with their reference implementations (issue 12).

Every test feeds fed-uml's objective the small fixed inputs written below (float64) and compares its
loss and, where it matters, its gradient with constants computed once from the reference code's
formulas: an independent float64 re-implementation of each cited function (not of fed-uml), run on
the same inputs. fed-uml must agree to 1e-6 (relative; 1e-9 absolute for entries near 0).

References (repository, file, commit):
- thuml/Transfer-Learning-Library (TLlib): tllib/modules/grl.py 65c8ae97ca25ba15c2e821aee386ed9d1ed77f57,
  tllib/alignment/dann.py 9fcd99cb1be0c43415bfbc2fe4cbbb7f15fbed52,
  tllib/alignment/cdan.py 534d48fc72cabf3ae96794ae881f91768c9f12ab,
  tllib/self_training/mcc.py 2b1f58c8fd88d79a2ca035f80a68fa18ceb7a451;
- thuml/CDAN: pytorch/loss.py 3f879d11ed10b8304a5e5b1f9c015f328b6ba994 (CDAN, Entropy),
  pytorch/network.py e1f5662333e1e3f7de1ef8aad2bcbe8c077466db (calc_coeff, AdversarialNetwork);
- lijin118/ATM: loss.py and network.py bbb432a6575e55fb137db72f7b7287a17d501789 (mdd_loss, CDAN, calc_coeff);
- XiaoFuLab/Shared-Component-Analysis: "Domain Adaptation/train.py" 4d212a628c822af7001010b81fac1dc9ea6620fc.

The references' discriminators end in one sigmoid unit; fed-uml's K-way discriminator is given the same
hidden layers and the logits (z, 0) (DANN, CDAN) or the single logit z (ISCA), which is the same
binary cross-entropy. Dropout is off (0) on both sides. Domain "a" is the references' source (label 1).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fed_uml.methods.alignment import DomainDiscriminator, grl_coefficient
from fed_uml.methods.cdan import CDANObjective
from fed_uml.methods.dann import DANNObjective
from fed_uml.methods.isca import ISCAObjective, whitening_loss
from fed_uml.methods.mcc import mcc_loss
from fed_uml.methods.mdd import ATMObjective

# ----------------------------------------------------------------------------- the fixed inputs

# encoder features of modality a (the references' source) and b (target): B = 4, D = 3
FA = [[-0.2138, -1.378, -0.0546], [0.4515, 0.7858, -1.0884], [-0.5599, -0.9336, 0.0479], [-0.0844, -0.1471, 0.759]]
FB = [[0.6466, -0.5041, -0.2882], [-0.3074, 0.2043, 0.3538], [0.8641, 0.9331, 1.0895], [-0.7568, 0.9411, 0.2218]]
LABELS_A, LABELS_B = [0, 1, 0, 1], [1, 1, 0, 0]
# the shared classifier h (D = 3 -> C = 2 classes), for CDAN's conditioning g = softmax(h(f))
H_W = [[-0.2588, -0.4724, 1.0558], [0.5683, 0.9663, 0.4828]]
H_B = [1.9573, -0.366]
# DANN discriminator 3 -> 4 -> 4 -> 1
D1_W = [[-0.2266, 0.2805, 0.4595], [0.5859, 0.3466, -1.3452], [0.2471, -0.7713, -0.296], [0.012, -0.5852, -0.821]]
D1_B = [0.4214, 0.4218, 0.403, 0.4822]
D2_W = [
    [-0.3976, -0.1738, -0.2086, 0.0085],
    [-0.5059, -0.4652, -0.9222, -0.8328],
    [-0.8581, -0.1401, -1.3198, -0.6725],
    [2.3004, -0.3475, -1.3815, -0.1919],
]
D2_B = [0.5287, 0.5432, 0.478, 0.5109]
D3_W = [[-1.2947, 0.5718, -0.1496, -0.2816]]
D3_B = [0.8199]
# CDAN discriminator on the multilinear map (C * D = 6) -> 4 -> 4 -> 1
C1_W = [
    [-0.1326, -0.7293, 1.0046, 1.9943, -1.5698, -0.6087],
    [-0.2226, 0.7329, 0.3822, -1.172, -0.788, -0.1834],
    [2.3241, 0.1977, 0.7108, 0.4608, -0.2643, -1.0589],
    [-2.1313, 0.3631, -0.0187, 0.0391, -1.0611, 0.0351],
]
C1_B = [0.594, 0.5127, 0.5158, 0.5857]
C2_W = [
    [0.4702, 0.9141, 0.6756, 0.797],
    [-0.8663, -0.5196, 0.6769, -0.2217],
    [-0.729, 0.3036, 1.224, 0.8725],
    [-0.6874, -1.7149, -0.2336, -0.0208],
]
C2_B = [0.3735, 0.4026, 0.4795, 0.4032]
C3_W = [[0.9343, -0.6185, 0.979, -0.0557]]
C3_B = [-0.4485]
# randomized multilinear map (output 5) and the first layer of its discriminator (then C2, C3)
R_F = [
    [-1.8112, 1.6667, 0.2653, -0.5408, -3.2928],
    [0.505, -0.7587, 0.802, -0.5984, 0.677],
    [-0.0655, -0.0543, -0.6914, -1.5889, -0.528],
]
R_G = [[-1.4819, -0.119, -0.9628, 0.0866, -1.1206], [-0.6193, 0.8776, -0.3605, -0.8706, -0.7953]]
E1_W = [
    [-0.2829, 0.41, 0.6199, -0.6092, -2.1374],
    [-1.5168, -1.8588, 0.4493, 1.1056, -0.2109],
    [1.2035, 0.4728, 0.0777, 1.7602, -0.1458],
    [0.1507, 0.3742, 0.7939, -0.7465, -0.7902],
]
E1_B = [0.2093, 0.4622, 0.3321, 0.5936]
# MCC: logits of one batch (B = 6, C = 3)
LOGITS = [
    [0.6954, 0.911, 3.7448],
    [-1.73, -4.9524, 1.7064],
    [2.4143, 0.5687, 1.6454],
    [1.304, 2.8816, 1.3635],
    [-0.3336, 1.8142, -1.1616],
    [-0.0572, -0.7113, 1.447],
]
# ISCA: pre-computed features of the two domains, the map Z (d_C = 2) and the discriminator 2 -> 3 -> 3 -> 1
X1 = [[1.7346, 0.6911, -0.1881], [-1.2772, 0.6861, 1.3397], [0.7322, 0.6652, -0.8527], [-0.3848, -0.5139, -0.6266]]
X2 = [[1.1449, 1.8075, -0.8825], [0.7744, -0.7803, -0.9991], [-1.2728, 1.1905, -2.0419], [0.1167, -0.582, -0.6204]]
Z_W = [[-1.0683, -1.3495, 0.0921], [0.4888, -0.4672, -0.2956]]
F1_W = [[-0.5227, -0.5305], [-0.0895, 0.7124], [1.0675, -0.0237]]
F1_B = [0.3687, 0.5582, 0.4314]
F2_W = [[0.5521, -2.3017, -1.7009], [0.8476, 0.9618, -0.2123], [-0.2741, 1.1936, 0.9695]]
F2_B = [0.4775, 0.4909, 0.2961]
F3_W = [[-0.6455, -1.8473, 0.2784]]
F3_B = [-0.3957]
# the smoothing noise of ISCA's targets: labels_true = 1 - U_TRUE, labels_false = U_FALSE
U_TRUE = [[0.0176], [0.1328], [0.0336], [0.0644]]
U_FALSE = [[0.0269], [0.064], [0.0653], [0.111]]

# the gradient-reversal coefficient of the DANN / CDAN / MDD parity checks: TLlib's at iteration 300
ITER = 300


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def close(got: torch.Tensor, expected) -> None:
    torch.testing.assert_close(got.detach(), t(expected), rtol=1e-6, atol=1e-9)


def set_linear(layer: nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        layer.weight.copy_(t(weight))
        layer.bias.copy_(t(bias))


def binary_as_two_way(disc: DomainDiscriminator, layers) -> DomainDiscriminator:
    """fed-uml's 2-way discriminator with the reference's layers: logits (z, 0), z the reference's logit."""
    (w1, b1), (w2, b2), (w3, b3) = layers
    disc.double()
    set_linear(disc.net[0], w1, b1)
    set_linear(disc.net[3], w2, b2)
    set_linear(disc.net[6], t(w3).tolist() + [[0.0] * len(w3[0])], t(b3).tolist() + [0.0])
    return disc


def features() -> dict[str, torch.Tensor]:
    return {"a": t(FA).requires_grad_(True), "b": t(FB).requires_grad_(True)}


def classifier_model() -> SimpleNamespace:
    head = nn.Linear(3, 2).double()
    set_linear(head, H_W, H_B)
    return SimpleNamespace(backbone=head)


# ----------------------------------------------------------------------------- gradient reversal

GRL_FIXED = [0.0, 0.0004999999583332748, 0.10461581914865059, 0.4621171572600098, 0.9866142981514305]
GRL_BUDGET_210 = [0.0, 0.4621171572600098, 0.9866142981514305, 0.9999092042625952, 0.9999092042625952]


def test_grl_fixed_schedule_matches_tllib_and_cdan_calc_coeff():
    """`grl_schedule: fixed` is TLlib's WarmStartGradientReverseLayer(alpha=1, lo=0, hi=1, max_iters=1000)
    (tllib/modules/grl.py, 65c8ae97ca25ba15c2e821aee386ed9d1ed77f57): 2 (hi - lo) / (1 + exp(-alpha i / N))
    - (hi - lo) + lo, which equals thuml/CDAN's calc_coeff(i, alpha=10, max_iter=10000) (pytorch/network.py,
    e1f5662333e1e3f7de1ef8aad2bcbe8c077466db) and lijin118/ATM's (network.py, bbb432a6...), at i = 0, 1, 210
    (the default synthetic budget), 1000 and 5000. `budget` is Ganin et al.'s schedule over a 210-step run."""
    for i, expected in zip([0, 1, 210, 1000, 5000], GRL_FIXED):
        assert grl_coefficient(i, 210, "fixed", max_iters=1000) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        obj = DANNObjective(["a", "b"], 3, hidden=4, grl_schedule="fixed")
        obj.setup(None, 210)
        obj.step = i
        assert obj.coefficient() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    for i, expected in zip([0, 21, 105, 210, 400], GRL_BUDGET_210):
        assert grl_coefficient(i, 210, "budget") == pytest.approx(expected, rel=1e-12, abs=1e-15)


# ----------------------------------------------------------------------------- DANN

COEFF_300 = 0.14888503362331806
DANN_LOSS = 0.6230998514555481
DANN_GRAD_A = [
    [-0.00034362661319779276, -0.0003946471166831841, 0.0011373004232275018],
    [0.0004873751002090253, 0.00012225125609567638, -0.0008167029458378488],
    [-0.00034173016084596106, -0.0003924690855766508, 0.0011310237380711993],
    [0.0017326217271888748, -0.004898557198766038, -0.0023000619403716186],
]
DANN_GRAD_B = [
    [-0.0009942186875027048, -0.0002493859110341759, 0.0016660295746382123],
    [-0.0011340949421927255, -0.0003076446598661887, -0.0011295962986651437],
    [-0.0008392608904746087, 0.001038890908111773, 0.0017018551596340809],
    [-0.001139095211331734, 0.0008718082385817508, 0.0023887529912150285],
]


def test_dann_matches_tllib_domain_adversarial_loss():
    """TLlib's DomainAdversarialLoss (tllib/alignment/dann.py, 9fcd99cb1be0c43415bfbc2fe4cbbb7f15fbed52):
    0.5 * (BCE(D(f_s), 1) + BCE(D(f_t), 0)), f through its WarmStartGradientReverseLayer at iteration 300;
    D the original DANN/CDAN 2-hidden-layer ReLU network. Loss and the (reversed) gradient w.r.t. the features."""
    obj = DANNObjective(["a", "b"], 3, hidden=4, dropout=0.0, grl_schedule="fixed", grl_max_iters=1000)
    binary_as_two_way(obj.discriminator, [(D1_W, D1_B), (D2_W, D2_B), (D3_W, D3_B)])
    obj.setup(None, 210)
    obj.step = ITER
    assert obj.coefficient() == pytest.approx(COEFF_300, rel=1e-12)
    f = features()
    loss = obj.forward(None, f, {})
    loss.backward()
    close(loss, DANN_LOSS)
    close(f["a"].grad, DANN_GRAD_A)
    close(f["b"].grad, DANN_GRAD_B)


# ----------------------------------------------------------------------------- CDAN

CDAN_LOSS = 2.040666604921774
CDAN_GRAD_A = [
    [-0.008018644694599498, -0.0003299556352167224, 0.0020826782455706542],
    [0.002325449242137143, 0.00010961078803871892, 0.00012958638584801598],
    [-0.006140517578672941, 0.0026710562319244863, 0.00022616056982791566],
    [0.00034997301317681045, 0.0011273438261625614, 0.0008142925636062194],
]
CDAN_GRAD_B = [
    [-0.05338154172765475, -0.0002141585766024343, -0.01761670797340764],
    [-0.008972988582555637, -0.029217535616382656, -0.021100367032187362],
    [-0.0350703656258733, -0.0048221397013995405, -0.013549938889797912],
    [0.061155190114696126, -0.015064884383620396, -0.006006418601039438],
]
CDANE_LOSS = 2.0248954856259536
CDANE_GRAD_A = [
    [-0.008643343554070012, -0.0003556610900468357, 0.0022449309421551885],
    [0.0019421572687960977, 9.154419923275664e-05, 0.00010822732083390634],
    [-0.006565831338670914, 0.0028560629442432434, 0.00024182524321813225],
    [0.00035615200380060625, 0.0011472477806658574, 0.0008286694038942091],
]
CDANE_GRAD_B = [
    [-0.05551584170526869, -0.00022272106150742952, -0.01832105891975351],
    [-0.00943260114968139, -0.030714110188631696, -0.02218116567243227],
    [-0.03235874132253475, -0.004449294110113149, -0.012502263938407582],
    [0.06030609649479426, -0.014855719843526568, -0.005923024015836817],
]
CDANE_TLLIB_LOSS = 1.9587626079897342
RCDAN_LOSS = 1.5197720453573043
RCDAN_GRAD_A = [
    [-0.003112070400300051, 3.282414261993418e-05, -8.252780604986831e-05],
    [-0.0011945004077151997, -0.0024001406210004397, 0.0017086924216263215],
    [-0.0006035324508643476, -0.0002715706891742968, 2.9665728023942538e-05],
    [-0.0014614998581500853, -0.0006066008537548999, 0.0001496718256542867],
]
RCDAN_GRAD_B = [
    [-0.02551875354212309, 0.008138502985375851, -0.0006925808326209772],
    [0.057210427877145184, -0.003622225092493729, -0.0027672790870292715],
    [-0.026082208822952403, 0.005809867403648411, -0.006205587703109627],
    [0.07882363281704384, -0.010631307478141063, 0.0026102844450589698],
]


def cdan(entropy_conditioning: bool, randomized: bool = False) -> CDANObjective:
    obj = CDANObjective(["a", "b"], 3, 2, entropy_conditioning=entropy_conditioning, randomized=randomized,
                        randomized_dim=5, hidden=4, dropout=0.0, grl_schedule="fixed", grl_max_iters=1000)
    first = (E1_W, E1_B) if randomized else (C1_W, C1_B)
    binary_as_two_way(obj.discriminator, [first, (C2_W, C2_B), (C3_W, C3_B)])
    if randomized:
        obj.random_map.double()
        obj.random_map.r_f.copy_(t(R_F))
        obj.random_map.r_g.copy_(t(R_G))
    obj.setup(None, 210)
    obj.step = ITER
    return obj


def test_cdan_matches_tllib_and_the_original_code():
    """Plain CDAN: TLlib's ConditionalDomainAdversarialLoss (tllib/alignment/cdan.py,
    534d48fc72cabf3ae96794ae881f91768c9f12ab; MultiLinearMap, g = softmax(h(f)) detached, mean BCE over the
    concatenated batch), which for equal batches is also thuml/CDAN's loss.CDAN without entropy
    (pytorch/loss.py, 3f879d11ed10b8304a5e5b1f9c015f328b6ba994). GRL at iteration 300."""
    obj = cdan(entropy_conditioning=False)
    f = features()
    loss = obj.forward(classifier_model(), f, {})
    loss.backward()
    close(loss, CDAN_LOSS)
    close(f["a"].grad, CDAN_GRAD_A)
    close(f["b"].grad, CDAN_GRAD_B)


def test_cdan_e_matches_the_original_cdan_code():
    """CDAN+E: thuml/CDAN pytorch/loss.py CDAN() with entropy (3f879d11ed10b8304a5e5b1f9c015f328b6ba994):
    w = 1 + exp(-H(g)) (Entropy with eps 1e-5), source and target weights each divided by their own sum,
    sum(w * BCE) / sum(w). The gradient w.r.t. the features with the weights held constant (the original
    also sends a reversed gradient through H into the classifier: a documented deviation). TLlib normalises
    over the concatenated batch instead (its value, CDANE_TLLIB_LOSS, differs: also documented)."""
    obj = cdan(entropy_conditioning=True)
    f = features()
    loss = obj.forward(classifier_model(), f, {})
    loss.backward()
    close(loss, CDANE_LOSS)
    close(f["a"].grad, CDANE_GRAD_A)
    close(f["b"].grad, CDANE_GRAD_B)
    assert abs(loss.item() - CDANE_TLLIB_LOSS) > 1e-3


def test_randomized_cdan_matches_tllib():
    """TLlib's RandomizedMultiLinearMap (tllib/alignment/cdan.py, 534d48fc72cabf3ae96794ae881f91768c9f12ab):
    (f R_f) * (g R_g) / sqrt(d), here with d = 5 and the fixed R_F, R_G above (thuml/CDAN's RandomLayer,
    pytorch/network.py e1f5662333e1e3f7de1ef8aad2bcbe8c077466db, is the same map)."""
    obj = cdan(entropy_conditioning=False, randomized=True)
    f = features()
    loss = obj.forward(classifier_model(), f, {})
    loss.backward()
    close(loss, RCDAN_LOSS)
    close(f["a"].grad, RCDAN_GRAD_A)
    close(f["b"].grad, RCDAN_GRAD_B)


# ----------------------------------------------------------------------------- MCC

MCC_LOSS = 0.586574189773628
MCC_GRAD = [
    [0.003011255258990415, 0.004515262110326128, -0.007526517369316544],
    [0.006054213419480267, 0.003399820475601576, -0.00945403389508184],
    [-0.011142714161838506, 0.0048598647283385, 0.0062828494335000085],
    [0.001790582232712261, -0.008488179933427415, 0.006697597700715155],
    [0.004856492240999326, -0.012857201914427793, 0.008000709673428467],
    [-0.0009367410743179232, 0.003425498593825624, -0.0024887575195077],
]


def test_mcc_matches_tllib():
    """TLlib's MinimumClassConfusionLoss(temperature=2.5) (tllib/self_training/mcc.py,
    2b1f58c8fd88d79a2ca035f80a68fa18ceb7a451): softmax(Z / T), entropy weights detached, class confusion
    normalised by its sums, off-diagonal mass / C. Loss and gradient w.r.t. the logits."""
    z = t(LOGITS).requires_grad_(True)
    loss = mcc_loss(z, temperature=2.5)
    loss.backward()
    close(loss, MCC_LOSS)
    close(z.grad, MCC_GRAD)


# ----------------------------------------------------------------------------- MDD (ATM)

MDD_INTER = 0.17362359146145445
MDD_INTRA = 0.7614227937328877
MDD_LOSS = 0.9350463851943421
MDD_GRAD_A = [
    [0.10650681811395567, -0.0414571578361365, -0.06504966027781918],
    [-0.008456536490075989, 0.06609117080939735, -0.0576346343193214],
    [-0.1320915280131371, 0.021011014997342727, 0.11108051301579439],
    [-0.057545198992329454, -0.11501595845739246, 0.17256115744972192],
]
MDD_GRAD_B = [
    [0.17731129519376063, -0.0650465854346993, -0.11226470975906136],
    [-0.11789369399584868, 0.021573566836608923, 0.09632012715923978],
    [0.08764034544956861, -0.1004698074685007, 0.012829462018932083],
    [-0.05679441961515934, 0.17326470987761977, -0.11647029026246046],
]
CDANE_ATM_LOSS = 2.040666604921774


def test_mdd_matches_atm_mdd_loss():
    """lijin118/ATM loss.py mdd_loss (bbb432a6575e55fb137db72f7b7287a17d501789) on features = cat(a, b) and
    labels = cat(LABELS_A, LABELS_B): softmax of the features, the B index-paired distances summed and divided
    by the concatenated batch 2B, plus get_pari_loss1 (mean distance over same-class pairs i < j) of each
    half, left/right weights 1. Loss, its two parts and the gradient w.r.t. the features."""
    obj = ATMObjective(["a", "b"], 3, 2, mdd_weight=1.0, trade_off=0.0)
    obj.setup(None, 210)
    f = features()
    batches = {"a": (None, torch.tensor(LABELS_A)), "b": (None, torch.tensor(LABELS_B))}
    loss = obj.forward(None, f, batches)
    loss.backward()
    close(loss, MDD_LOSS)
    assert obj.stats["mdd_inter"][-1] == pytest.approx(MDD_INTER, rel=1e-9)
    assert obj.stats["mdd_intra"][-1] == pytest.approx(MDD_INTRA, rel=1e-9)
    close(f["a"].grad, MDD_GRAD_A)
    close(f["b"].grad, MDD_GRAD_B)


def test_atm_adversarial_term_against_atm_and_cdan():
    """ATM's copy of CDAN (lijin118/ATM loss.py CDAN, bbb432a6575e55fb137db72f7b7287a17d501789) multiplies the
    entropy weights by the batch-mean BCE, so its value is that of plain CDAN: fed-uml's MDD with
    entropy_conditioning=false reproduces it; the default (true) is the original CDAN+E (thuml/CDAN loss.py)."""
    batches = {"a": (None, torch.tensor(LABELS_A)), "b": (None, torch.tensor(LABELS_B))}
    for entropy_conditioning, expected in ((False, CDANE_ATM_LOSS), (True, CDANE_LOSS)):
        obj = ATMObjective(["a", "b"], 3, 2, mdd_weight=0.0, entropy_conditioning=entropy_conditioning, hidden=4,
                           dropout=0.0, grl_schedule="fixed", grl_max_iters=1000)
        binary_as_two_way(obj.adversarial.discriminator, [(C1_W, C1_B), (C2_W, C2_B), (C3_W, C3_B)])
        obj.setup(None, 210)
        obj.adversarial.step = ITER
        close(obj.forward(classifier_model(), features(), batches), expected)


# ----------------------------------------------------------------------------- ISCA

ISCA_CRITIC = 2.8501740315740176
ISCA_CRITIC_GRAD_F3 = [[-0.0008068402307595808, -1.1642637729419472, -1.1125130742443803]]
ISCA_MAPS = 2.8326195358967987
ISCA_WHITEN = 1.9896285617151275
ISCA_TOTAL = 4.822248097611926
ISCA_GRAD_Z = [
    [-2.3070510284399055, -2.261907810357204, 0.8640644196550974],
    [0.25333069924767915, -0.7268454693738602, 0.19543751589725278],
]


def test_isca_matches_the_original_train_py():
    """XiaoFuLab/Shared-Component-Analysis "Domain Adaptation/train.py" (4d212a628c822af7001010b81fac1dc9ea6620fc),
    one step with the smoothed targets fixed: c_q = Z(X_q - mean X_q); critic loss BCE(f(c1), labels_true) +
    BCE(f(c2), labels_false) (its gradient w.r.t. f's last layer); the maps' loss BCE(f(c1), labels_false) +
    BCE(f(c2), labels_true) + (1/D) ||(1/N) c^T c - I||_F per domain (lambda_dist = lambda = 1) and its
    gradient w.r.t. Z."""
    disc = DomainDiscriminator(2, 3, 1, dropout=0.0).double()
    set_linear(disc.net[0], F1_W, F1_B)
    set_linear(disc.net[3], F2_W, F2_B)
    set_linear(disc.net[6], F3_W, F3_B)
    labels_true, labels_false = 1.0 - t(U_TRUE), t(U_FALSE)
    z = t(Z_W).requires_grad_(True)
    x1, x2 = t(X1), t(X2)
    c1, c2 = (x1 - x1.mean(0)) @ z.t(), (x2 - x2.mean(0)) @ z.t()
    critic = ISCAObjective.critic_loss(disc, c1, c2, labels_true, labels_false)
    critic.backward(inputs=[disc.net[6].weight])
    close(critic, ISCA_CRITIC)
    close(disc.net[6].weight.grad, ISCA_CRITIC_GRAD_F3)
    assert z.grad is None  # the critic loss reads detached components
    maps = ISCAObjective.map_loss(disc, c1, c2, labels_false, labels_true)
    white = whitening_loss(c1) + whitening_loss(c2)
    (maps + white).backward()
    close(maps, ISCA_MAPS)
    close(white, ISCA_WHITEN)
    close(maps + white, ISCA_TOTAL)
    close(z.grad, ISCA_GRAD_Z)
