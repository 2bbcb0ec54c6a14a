"""Aligned projection initialisation: one random draw for every modality's projection."""

import math

import pytest
import torch

from fed_uml.models import REFERENCE_CHANNELS, create_model
from fed_uml.models.uml import adapt_input_conv, first_conv_key


def _first_conv(model, modality):
    proj = model.projection(modality)
    return proj.state_dict()[first_conv_key(proj)]


@pytest.mark.parametrize("backbone, kwargs", [("small_cnn", {"width": 8}), ("resnet18", {"small_input": True}),
                                              ("resnet18", {})])
@pytest.mark.parametrize("specific", [1, 2])
def test_equal_channel_projections_start_bit_identical(backbone, kwargs, specific):
    torch.manual_seed(0)
    model = create_model(backbone, {"rgb": 3, "rgb2": 3, "sar": 2}, 10, specific, **kwargs)
    a, b = model.projection("rgb").state_dict(), model.projection("rgb2").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # later tensors of the projection are copied whatever the channel count
    s = model.projection("sar").state_dict()
    key = first_conv_key(model.projection("sar"))
    assert all(torch.equal(s[k], a[k]) for k in a if k != key)


def test_independent_init_draws_one_projection_per_modality():
    torch.manual_seed(0)
    model = create_model("small_cnn", {"rgb": 3, "rgb2": 3}, 10, projection_init="independent", width=8)
    assert not torch.equal(_first_conv(model, "rgb"), _first_conv(model, "rgb2"))
    with pytest.raises(ValueError, match="model.projection_init must be one of"):
        create_model("small_cnn", {"rgb": 3}, 10, projection_init="paired")


def test_channel_adaptation_rule_on_1_2_3_and_13_channels():
    """timm's rule: repeat the reference's input channels cyclically, cut to C, scale by 3 / C;
    one channel sums them. Checked by hand against the 3-channel projection of the same draw."""
    torch.manual_seed(0)
    model = create_model("small_cnn", {"rgb": 3, "pan": 1, "sar": 2, "ms": 13}, 10, width=8)
    ref = _first_conv(model, "rgb")
    assert ref.shape[1] == REFERENCE_CHANNELS
    torch.testing.assert_close(_first_conv(model, "pan"), ref.sum(dim=1, keepdim=True))
    torch.testing.assert_close(_first_conv(model, "sar"), ref[:, :2] * 1.5)
    ms = _first_conv(model, "ms")
    assert ms.shape[1] == 13
    for c in range(13):
        torch.testing.assert_close(ms[:, c], ref[:, c % 3] * 3 / 13)
    # the same draw wherever the modality sits in the list: the reference comes first
    torch.manual_seed(0)
    other = create_model("small_cnn", {"ms": 13, "sar": 2}, 10, width=8)
    torch.testing.assert_close(_first_conv(other, "sar"), ref[:, :2] * 1.5)
    assert math.isclose(float(_first_conv(other, "ms").sum()), float(ms.sum()), rel_tol=1e-5)


def test_backbone_is_the_reference_draw_whatever_the_modalities():
    """The server builds the initial backbone with a placeholder modality; institutions with
    real modalities must get the same backbone from the same seed."""
    torch.manual_seed(3)
    a = create_model("small_cnn", {"placeholder": 1}, 10, width=8).backbone.state_dict()
    torch.manual_seed(3)
    b = create_model("small_cnn", {"sar": 2, "rgb": 3}, 10, width=8).backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compared_methods_encoders_are_aligned():
    from fed_uml.data import load_dataset
    from fed_uml.methods.alignment import build_heterogeneous_model
    from tests.conftest import tiny_config

    cfg = tiny_config("dann", modalities=("sar", "rgb"))
    data = load_dataset(cfg["dataset"])
    torch.manual_seed(0)
    model = build_heterogeneous_model(dict(cfg["model"], projection_init="aligned"), data)
    torch.testing.assert_close(_first_conv(model, "sar"), _first_conv(model, "rgb")[:, :2] * 1.5)
    s, r = model.projection("sar").state_dict(), model.projection("rgb").state_dict()
    key = first_conv_key(model.projection("sar"))
    assert len(s) > 10 and all(torch.equal(s[k], r[k]) for k in s if k != key)


def test_federated_institutions_start_from_the_runs_aligned_draw():
    """Institutions of different modalities start from one draw seeded by the run (not the
    node): the SAR stem is the RGB stem adapted, and it does not depend on the node."""
    from fed_uml.federated.backbone import initial_backbone
    from fed_uml.federated.institution import Institution
    from fed_uml.federated.roles import institution_layout
    from tests.conftest import tiny_config

    cfg = tiny_config("uml")
    cfg["dataset"]["num_classes"] = 10
    cfg["federated"] = {"partitioning": "iid", "dirichlet_alpha": 0.5, "num_rounds": 1}
    layout = institution_layout(4, ["sar", "rgb"], 0)
    insts = [Institution(cfg, ident) for ident in layout]
    states = [i.initial_private_state() for i in insts]
    by_modality = {}
    for inst, st in zip(insts, states):
        by_modality.setdefault(inst.ident.modality, []).append(st[f"projections.{inst.ident.modality}.0.0.weight"])
    for ws in by_modality.values():
        assert all(torch.equal(w, ws[0]) for w in ws)
    torch.testing.assert_close(by_modality["sar"][0], by_modality["rgb"][0][:, :2] * 1.5)
    # the centralized model of the same seed has the same projection and backbone
    torch.manual_seed(cfg["seed"])
    central = create_model("small_cnn", {"sar": 2, "rgb": 3}, 10, width=8)
    torch.testing.assert_close(_first_conv(central, "rgb"), by_modality["rgb"][0])
    server = initial_backbone(cfg)
    assert all(torch.equal(server[k], v) for k, v in central.state_dict().items() if k in server)
    cfg["model"]["projection_init"] = "independent"
    ind = {i.ident.modality: i.initial_private_state()[f"projections.{i.ident.modality}.0.0.weight"] for i in insts}
    assert not torch.allclose(ind["sar"], ind["rgb"][:, :2] * 1.5)


def test_channel_adaptation_is_timms_bit_for_bit():
    """The project's copy of the rule gives what timm's `adapt_input_conv` gives (timm is a test
    dependency only: importing it costs every process of a simulation 2 s of torchvision)."""
    from timm.models import adapt_input_conv as timms

    weight = torch.randn(16, REFERENCE_CHANNELS, 3, 3, generator=torch.Generator().manual_seed(0))
    for channels in range(1, 14):
        ours = adapt_input_conv(channels, weight)
        assert torch.equal(ours, timms(channels, weight.clone(), base_chans=REFERENCE_CHANNELS)), channels
    with pytest.raises(ValueError, match="input channels"):
        adapt_input_conv(2, torch.randn(16, 4, 3, 3))


def test_building_a_model_imports_neither_timm_nor_torchvision():
    import subprocess
    import sys

    code = ("import sys, torch; from fed_uml.models import create_model; "
            "create_model('small_cnn', {'sar': 2, 'rgb': 3}, 10, width=8); "
            "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
