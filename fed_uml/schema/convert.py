"""A composed config (plain containers) read as typed settings objects, checked against the schema.

Why entry points convert instead of passing `DictConfig`s around: a run's config travels as
plain JSON-able containers (through Flower's run config, into results.json, model files and
checkpoints); the run, the institution and the server's round driver read it once as a
`Settings` object, so that a typo in a setting's name fails there, with its name, instead of
being a `KeyError` deep inside, and so that the types are the schema's. The conversion is
OmegaConf's, the one Hydra validates a composition with, so a config that composes converts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from fed_uml.errors import SettingsError
from fed_uml.schema.datasets import DATASETS, DatasetSettings
from fed_uml.schema.methods import METHODS, MethodSettings
from fed_uml.schema.models import MODELS, ModelSettings
from fed_uml.schema.top import Settings

T = TypeVar("T")


# config group -> (the field that names its choice, the choice -> schema table, the base schema)
GROUPS: dict[str, tuple[str, Mapping[str, type], type]] = {
    "dataset": ("name", DATASETS, DatasetSettings),
    "model": ("backbone", MODELS, ModelSettings),
    "method": ("name", METHODS, MethodSettings),
}


def _choice(cfg: Mapping[str, Any], group: str) -> Any:
    node = cfg.get(group)
    return node.get(GROUPS[group][0]) if isinstance(node, Mapping) else None


def group_schemas(cfg: Mapping[str, Any]) -> dict[str, type]:
    """The schema of each config group of `cfg`, told by the group's own name field.

    A choice no table knows, e.g. a data set a user registered, is read against the group's base
    schema.
    """
    return {group: table.get(_choice(cfg, group), base) for group, (_, table, base) in GROUPS.items()}


def _unknown_choices(cfg: Mapping[str, Any]) -> str:
    """What a config's group choices that no schema table knows are, for an error message."""
    out = []
    for group, (field, table, _) in GROUPS.items():
        choice = _choice(cfg, group)
        if choice not in table:
            out.append(f"{group} {choice!r} has no schema of its own (the setting {group}.{field} names none of "
                       f"{sorted(table)}), so only the settings every {group} has are known")
    return f" ({'; '.join(out)})" if out else ""


def _message(e: Exception, prefix: str) -> str:
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue

    key = prefix + str(getattr(e, "full_key", "") or "")
    if isinstance(e, ConfigKeyError):
        schema = getattr(e, "object_type", None)
        known = ", ".join(f.name for f in dataclasses.fields(schema)) if dataclasses.is_dataclass(schema) else ""
        where = key.rpartition(".")[0] or "the top level"
        return f"unknown setting {key!r}" + (f"; the settings of {where} are: {known}" if known else "")
    if isinstance(e, MissingMandatoryValue):
        return f"setting {key} has no value: set it"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"setting {key}: {first}"


def typed(schema: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """`values` as an instance of `schema` (a schema dataclass), defaults filling what is absent.

    An unknown key, a value of the wrong type or a missing one is a `SettingsError` naming it
    (`prefix` + its path, e.g. `method.` for a method's settings).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), dict(values))
        return OmegaConf.to_object(node)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise SettingsError(_message(e, prefix)) from None


def settings_of(cfg: Mapping[str, Any]) -> Settings:
    """The typed settings of a composed config (what `compose_config` returns, or a run's recorded `config`).

    Every group read against its schema (`group_schemas`). A fresh object per call; the conversion
    is cached (it costs more than a small institution's round).
    """
    values = {k: v for k, v in cfg.items() if k != "hydra"}
    return copy.deepcopy(_settings(json.dumps(values, default=str)))


@functools.lru_cache(maxsize=16)
def _settings(values_json: str) -> Settings:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    values = json.loads(values_json)
    try:
        node = OmegaConf.merge(_schema_node(tuple(group_schemas(values).items())), values)
        return OmegaConf.to_object(node)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise SettingsError(_message(e, "") + _unknown_choices(values)) from None


@functools.lru_cache(maxsize=16)
def _schema_node(groups: tuple[tuple[str, type], ...]) -> Any:
    """The schema `Settings` with these group schemas, as an OmegaConf node.

    Made once: making it costs more than merging a config into it, which leaves it as it is.
    """
    from omegaconf import OmegaConf

    node = OmegaConf.structured(Settings)
    node.results_dir = None  # its default is Hydra's output folder, known only inside Hydra
    for group, schema in groups:
        node[group] = OmegaConf.structured(schema)
    return node
