"""The fair baseline: a unimodal model takes the optimiser steps its modality gets inside UML."""

import pytest

import fed_uml.training.loop as loop
from fed_uml.data import load_dataset
from fed_uml.methods import get_method
from tests.conftest import tiny_config


def _asymmetric(method, epochs=2, **method_settings):
    # sar: 2 scenes per class (20 images), rgb: 6 per class (60 images), batches of 8
    cfg = tiny_config(method, epochs=epochs, samples_per_class={"sar": 2, "rgb": 6}, test_samples_per_class=1)
    cfg["method"].update(method_settings)
    return cfg, load_dataset(cfg["dataset"])


def test_unimodal_takes_the_steps_its_modality_gets_inside_uml(optimizer_steps):
    cfg, data = _asymmetric("uml")
    uml = get_method("uml")(data, cfg)
    assert optimizer_steps == [2 * 8]  # an epoch = ceil(60 / 8) steps, each with a batch of every modality
    optimizer_steps.clear()
    cfg, data = _asymmetric("unimodal")
    uni = get_method("unimodal")(data, cfg)
    assert optimizer_steps == [16, 16]  # sar, then rgb: both as many steps as inside UML
    assert {k: m["optimizer_steps"] for k, m in uni.items()} == {k: m["optimizer_steps"] for k, m in uml.items()}


def test_the_old_epoch_rule_stays_a_setting(optimizer_steps):
    cfg, data = _asymmetric("unimodal", budget="epochs")
    out = get_method("unimodal")(data, cfg)
    assert optimizer_steps == [2 * 3, 2 * 8]  # sar: ceil(20 / 8) steps an epoch
    assert out["sar"]["optimizer_steps"] == 6
    cfg, data = _asymmetric("unimodal", budget="steps")
    with pytest.raises(ValueError, match="method.budget must be one of"):
        get_method("unimodal")(data, cfg)


def test_cosine_schedule_spans_the_matched_budget():
    """The learning rate reaches ~0 at the last matched step, not after the small modality's own epoch."""
    from fed_uml.models import create_model
    from fed_uml.training import TrainSettings, train_unpaired

    cfg, data = _asymmetric("unimodal")
    model = create_model("small_cnn", {"sar": 2}, 10, width=4)
    lrs = []
    settings = TrainSettings(epochs=2, batch_size=8, log_every=0)
    orig = loop.make_optimizer

    def spy(params, s):
        opt = orig(params, s)
        step = opt.step

        def wrapped(*a, **k):
            lrs.append(opt.param_groups[0]["lr"])
            return step(*a, **k)

        opt.step = wrapped
        return opt

    loop.make_optimizer, saved = spy, loop.make_optimizer
    try:
        train_unpaired(model, {"sar": data["sar"].train}, settings, steps_per_epoch=8)
    finally:
        loop.make_optimizer = saved
    assert len(lrs) == 16 and lrs[0] == pytest.approx(1e-3) and lrs[-1] < 0.02 * 1e-3
    assert lrs[7] > 0.4e-3  # half-way through the matched budget, not at its end


@pytest.mark.parametrize("method", ["uml", "unimodal"])
def test_federated_institutions_take_the_same_steps_under_both_methods(method, optimizer_steps):
    """Federated UML and the federated baseline train an institution identically: L passes
    over its own data (or `federated.local_steps` steps), whichever method the server runs."""
    from fed_uml.federated.backbone import initial_backbone
    from fed_uml.federated.institution import Institution
    from fed_uml.federated.roles import institution_layout

    cfg = tiny_config(method, samples_per_class={"sar": 2, "rgb": 6}, test_samples_per_class=1)
    cfg["dataset"]["num_classes"] = 10
    cfg["federated"] = {"partitioning": "iid", "dirichlet_alpha": 0.5, "num_rounds": 3, "local_steps": 0}
    backbone = initial_backbone(cfg)
    steps = {}
    for ident in institution_layout(4, ["sar", "rgb"], 0):  # sar: 10 images each, rgb: 30
        inst = Institution(cfg, ident)
        _, _, metrics = inst.fit(backbone, None, server_round=1, local_epochs=2)
        steps[ident.name] = metrics["optimizer-steps"]
    assert steps == {"sar-0": 2 * 2, "sar-1": 2 * 2, "rgb-0": 2 * 4, "rgb-1": 2 * 4}
    assert optimizer_steps == [4, 8, 4, 8]
    cfg["federated"]["local_steps"] = 5
    inst = Institution(cfg, institution_layout(4, ["sar", "rgb"], 0)[0])
    assert inst.fit(backbone, None, server_round=2, local_epochs=2)[2]["optimizer-steps"] == 5
    assert optimizer_steps[-1] == 5
