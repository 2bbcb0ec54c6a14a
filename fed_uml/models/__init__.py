"""Model factory: one projection per modality in front of one shared backbone.

`create_model("small_cnn", modalities={"sar": 2, "rgb": 3}, num_classes=10)` follows timm's
`create_model(name, in_chans=...)`: backbones are registered by name (with their number of
stages) and every modality gets its own copy of the first `specific_layers` stages, built
for its channel count. `model_from_config(cfg["model"], channels, num_classes)` builds the
network a `model` config group describes.
"""

# Import for the side effect of registering the built-in backbones.
from fed_uml.models import backbones as _backbones  # noqa: F401
from fed_uml.models.registry import available_backbones, backbone_stages, register_backbone
from fed_uml.models.sharing import (
    private_state,
    shared_state,
    shared_state_keys,
    split_state_keys,
)
from fed_uml.models.uml import (
    PROJECTION_INITS,
    REFERENCE_CHANNELS,
    Backbone,
    Projection,
    UMLModel,
    align_projection,
    create_model,
    model_from_config,
)

__all__ = [
    "PROJECTION_INITS",
    "REFERENCE_CHANNELS",
    "Backbone",
    "Projection",
    "UMLModel",
    "align_projection",
    "available_backbones",
    "backbone_stages",
    "create_model",
    "model_from_config",
    "private_state",
    "register_backbone",
    "shared_state",
    "shared_state_keys",
    "split_state_keys",
]
