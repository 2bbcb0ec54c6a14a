"""Every setting of fed-uml, declared once: typed dataclasses that are Hydra's schema of conf/.

Each setting is one field of one class here: its name, type, default and description (the
docstring under the field), and, where the Flower apps take it as a run-config key, that key
(`fields.run_config`). From these classes:

- composing conf/ with Hydra validates every key and type (`store.register` puts them in
  Hydra's ConfigStore; conf/config.yaml starts from `schema`), and the choices of the `method`
  and `model` groups are the classes themselves;
- the data sets' yaml files hold only what differs per data set (`datasets.DATASETS`);
- the run-config key table and its types are derived (`fed_uml.federated.config`), and
  pyproject.toml's `[tool.flwr.app.config]` is checked against it;
- the settings reference of the docs is generated (`reference.declared`);
- entry points read a composed config as typed objects (`convert.settings_of`).

Adding a setting: one field, with its default and a docstring, in the class of its group
(docs/reference/settings.md, "Adding a setting").
"""

from fed_uml.schema.convert import settings_of, typed
from fed_uml.schema.datasets import (
    DATASETS,
    DatasetSettings,
    MultiLabelDatasetSettings,
    RealDatasetSettings,
    SensorNoise,
    SyntheticDatasetSettings,
)
from fed_uml.schema.federated import FederatedSettings
from fed_uml.schema.methods import METHODS, MethodSettings
from fed_uml.schema.models import MODELS, ModelSettings
from fed_uml.schema.top import CalibrationSettings, DecisionSettings, Settings
from fed_uml.schema.training import TrainingSettings

__all__ = [
    "DATASETS", "METHODS", "MODELS", "CalibrationSettings", "DatasetSettings", "DecisionSettings",
    "FederatedSettings", "MethodSettings", "ModelSettings", "MultiLabelDatasetSettings", "RealDatasetSettings",
    "SensorNoise", "Settings", "SyntheticDatasetSettings", "TrainingSettings", "settings_of", "typed",
]
