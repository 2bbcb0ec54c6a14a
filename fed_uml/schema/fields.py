"""How a setting is declared: a dataclass field, with its run-config key where Flower reads it.

Why field metadata: the run-config keys of the Flower apps (`[tool.flwr.app.config]` in
pyproject.toml) are a flat, hyphenated view of some settings. Naming the key on the field
that declares the setting keeps its name, type, default and run-config key in one place;
`fed_uml.federated.config` derives the key table from it, and a test checks pyproject.toml
against it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

RUN_CONFIG = "run_config"


def run_config(key: str, default: Any) -> Any:
    """A setting that the Flower apps also take as the run-config key `key`.

    `default` is the setting's default (a list or dict is copied per instance).
    """
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={RUN_CONFIG: key})
    return dataclasses.field(default=default, metadata={RUN_CONFIG: key})


def nested(make: Callable[[], Any]) -> Any:
    """A mapping of settings made by `make`.

    A schema class (every field of which has a default) or a function giving the default mapping.
    """
    return dataclasses.field(default_factory=make)


def listed(*items: Any) -> Any:
    """A list setting whose default is `items`."""
    return dataclasses.field(default_factory=lambda: list(items))
