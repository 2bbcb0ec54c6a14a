import copy

import pytest
import torch
from torch import nn

from fed_uml.models import (
    Projection,
    available_backbones,
    backbone_stages,
    create_model,
    model_from_config,
    private_state,
    register_backbone,
    shared_state,
    split_state_keys,
)
from fed_uml.models import registry as backbone_registry
from fed_uml.models.layers import MaxPool2d


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("specific", [1, 2])
def test_projection_per_modality_and_shared_backbone(backbone, specific):
    model = create_model(backbone, {"sar": 2, "rgb": 3, "ms": 13}, num_classes=10, specific_layers=specific)
    assert model.modalities == ["sar", "rgb", "ms"]
    for name, chans in [("sar", 2), ("rgb", 3), ("ms", 13)]:
        out = model(torch.randn(2, chans, 32, 32), name)
        assert out.shape == (2, 10)
    # the projections are separate modules, the backbone is one
    assert model.projections["sar"] is not model.projections["rgb"]
    assert len(model.projections["sar"]) == specific


def test_shared_and_private_tensors_chosen_by_module_type():
    model = create_model("small_cnn", {"sar": 2, "rgb": 3}, num_classes=5, specific_layers=2, width=8)
    shared, private = split_state_keys(model)
    state = model.state_dict()
    assert set(shared) | set(private) == set(state) and not set(shared) & set(private)
    backbone_params = {id(p) for p in model.backbone.parameters()}
    named = dict(model.named_parameters())
    # shared: exactly the backbone's parameters (classifier included)
    assert {id(named[k]) for k in shared} == backbone_params
    # private: every projection tensor and every BN buffer, wherever it is
    for k in private:
        assert k.startswith("projections.") or k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    bn_buffers = [k for k in state if k.endswith("running_mean")]
    assert bn_buffers and all(k in private for k in bn_buffers)
    assert list(shared_state(model)) == shared and list(private_state(model)) == private


def test_sharing_does_not_depend_on_names():
    """Renaming a submodule does not change the classification: only the module type counts."""
    holder = nn.Module()
    holder.frontend = Projection("a", 1, [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)])
    holder.net = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    shared, private = split_state_keys(holder)
    assert shared == ["net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias"]
    assert all(k.startswith("frontend.") or "running" in k or "num_batches" in k for k in private)
    # a UML model's own modules under other names are classified exactly as in the model
    model = create_model("small_cnn", {"a": 1}, num_classes=3, width=4)
    renamed = nn.Module()
    renamed.encoder, renamed.trunk = model.projections["a"], model.backbone

    def rename(keys):
        return [k.replace("projections.a.", "encoder.", 1).replace("backbone.", "trunk.", 1) for k in keys]

    model_shared, model_private = split_state_keys(model)
    assert any(k.startswith("backbone.") for k in model_shared)
    assert split_state_keys(renamed) == (rename(model_shared), rename(model_private))


def test_wrong_channel_count_is_a_clear_error():
    model = create_model("small_cnn", {"sar": 2}, num_classes=4, width=4)
    with pytest.raises(ValueError, match=r"modality 'sar' expects input of shape \(N, 2, H, W\)"):
        model(torch.randn(1, 3, 16, 16), "sar")


def test_unknown_modality_is_a_clear_error():
    model = create_model("small_cnn", {"sar": 2}, num_classes=4, width=4)
    with pytest.raises(KeyError, match="unknown modality 'rgb'"):
        model(torch.randn(1, 3, 16, 16), "rgb")


def test_factory_rejects_bad_settings():
    assert {"small_cnn", "resnet18"} <= set(available_backbones())
    with pytest.raises(ValueError, match="unknown backbone 'vit'"):
        create_model("vit", {"a": 3}, 4)
    with pytest.raises(ValueError, match="specific_layers=5 is out of range"):
        create_model("small_cnn", {"a": 3}, 4, specific_layers=5)
    only_head = create_model("small_cnn", {"a": 3, "b": 2}, 4, specific_layers=4, width=4)
    assert isinstance(only_head.backbone[0], torch.nn.Linear) and len(only_head.backbone) == 1
    with pytest.raises(ValueError, match="no modalities"):
        create_model("small_cnn", {}, 4)


def test_model_from_config_builds_the_configured_network():
    cfg = {"backbone": "small_cnn", "specific_layers": 2, "width": 4, "projection_init": "independent"}
    given = dict(cfg)
    torch.manual_seed(0)
    a = model_from_config(cfg, {"sar": 2, "rgb": 3}, 5)
    torch.manual_seed(0)
    b = create_model("small_cnn", {"sar": 2, "rgb": 3}, 5, 2, projection_init="independent", width=4)
    assert cfg == given  # the config is not consumed
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # the compared methods override the configured number of specific stages
    every = model_from_config(cfg, {"sar": 2}, 5, specific_layers=backbone_stages("small_cnn"))
    assert len(every.projection("sar")) == 4 and [type(m) for m in every.backbone] == [nn.Linear]
    assert len(model_from_config({"backbone": "small_cnn", "width": 4}, {"a": 1}, 3).projection("a")) == 1
    with pytest.raises(ValueError, match="model.backbone is missing"):
        model_from_config({"width": 4}, {"a": 1}, 3)


def test_backbone_registry_knows_stage_counts_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(backbone_registry, "_REGISTRY", dict(backbone_registry._REGISTRY))
    monkeypatch.setattr(backbone_registry, "_STAGES", dict(backbone_registry._STAGES))
    assert backbone_stages("small_cnn") == 4 and backbone_stages("resnet18") == 5
    for name in ("small_cnn", "resnet18"):  # the registered count is what the builder returns
        stages, _ = backbone_registry.get_stage_builder(name)(1, 2)
        assert len(stages) == backbone_stages(name)
    with pytest.raises(ValueError, match="unknown backbone 'vit'"):
        backbone_stages("vit")
    with pytest.raises(ValueError, match="backbone 'small_cnn' is already registered"):
        register_backbone("small_cnn", stages=4)(lambda in_chans, num_classes: ([], nn.Identity()))

    @register_backbone("miscounted", stages=3)
    def miscounted(in_chans, num_classes):
        return [nn.Conv2d(in_chans, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())], nn.Linear(4, 2)

    assert backbone_stages("miscounted") == 3
    with pytest.raises(ValueError, match="registered with 3 stages, but its builder returned 2"):
        create_model("miscounted", {"a": 1}, 2)


def _with_torch_pooling(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose pooling layers are torch's own `nn.MaxPool2d`."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, MaxPool2d):
                setattr(module, name, torch.nn.MaxPool2d(child.kernel_size))
    return model


def test_fast_max_pool_trains_bit_for_bit_like_torch():
    # a ReLU'd input has many tied zeros in a window: the first maximum must win, as in torch
    x = torch.relu(torch.randn(4, 6, 8, 8, generator=torch.Generator().manual_seed(0))).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(4, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    out, out_ref = MaxPool2d(2)(x), torch.nn.MaxPool2d(2)(x_ref)
    out.backward(grad)
    out_ref.backward(grad)
    assert torch.equal(out, out_ref) and torch.equal(x.grad, x_ref.grad)
    with torch.no_grad():
        assert torch.equal(MaxPool2d(2)(x), out_ref)

    torch.manual_seed(0)
    fast = create_model("small_cnn", {"sar": 2}, num_classes=10, width=8)
    assert any(isinstance(m, MaxPool2d) for m in fast.modules())
    slow = _with_torch_pooling(fast)
    assert not any(isinstance(m, MaxPool2d) for m in slow.modules())
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(16, 2, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(5)]
    for model in (fast, slow):
        opt = torch.optim.AdamW(model.parameters(), 1e-2)
        for xb, yb in batches:
            loss = torch.nn.functional.cross_entropy(model(xb, "sar"), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (k, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_fast_max_pool_falls_back_to_torch_where_it_does_not_tile():
    x = torch.randn(2, 3, 7, 7)
    for kwargs in ({"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": 2, "ceil_mode": True}):
        assert torch.equal(MaxPool2d(**kwargs)(x), torch.nn.MaxPool2d(**kwargs)(x))
    assert torch.equal(MaxPool2d(2)(x.transpose(2, 3)), torch.nn.MaxPool2d(2)(x.transpose(2, 3)))
