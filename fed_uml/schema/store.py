"""The schema as Hydra sees it: every class registered in Hydra's ConfigStore.

What composing conf/config.yaml then does: its defaults list starts with `schema` (the
top-level `Settings`), so every top-level setting, `training` and `federated` are typed with
their defaults; `method=<name>` and `model=<name>` pick a registered class (`METHODS`,
`MODELS`) as the whole group; `dataset=<name>` composes conf/dataset/<name>.yaml onto the
schema of that data set (`DATASETS`, the group `schema/dataset`). A key no schema declares, or
a value of the wrong type, fails the composition with the key's name.
"""

from __future__ import annotations

import functools

from fed_uml.schema.datasets import DATASETS
from fed_uml.schema.methods import METHODS
from fed_uml.schema.models import MODELS
from fed_uml.schema.top import Settings

SCHEMA = "schema"  # the top-level schema's name in conf/config.yaml's defaults list
DATASET_SCHEMAS = "schema/dataset"  # the group of the data sets' schemas


@functools.cache
def register() -> None:
    """Register the schema with Hydra (once per process; before anything composes conf/)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name=SCHEMA, node=Settings)
    for name, method in METHODS.items():
        store.store(group="method", name=name, node=method)
    for name, model in MODELS.items():
        store.store(group="model", name=name, node=model)
    for name, dataset in DATASETS.items():
        store.store(group=DATASET_SCHEMAS, name=name, node=dataset)
