"""Name -> method registry for `method=<name>` (a leaf: imports no other module of `fed_uml.methods`).

A method is a function `(data, cfg) -> {modality: result}`: it takes the loaded modalities
and the resolved config and returns, per modality, the entry of `results.json["modalities"]`
(`fed_uml.results.modality_result`). Each method module registers its function with
`@register_method("<name>")`; importing `fed_uml.methods` imports all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fed_uml.errors import SettingsError
from fed_uml.modality import ModalityData

MethodFn = Callable[[Mapping[str, ModalityData], Mapping[str, Any]], dict[str, dict[str, Any]]]
_METHODS: dict[str, MethodFn] = {}


def register_method(name: str) -> Callable[[MethodFn], MethodFn]:
    """Register the decorated function as `method=<name>`; a name is registered once."""

    def decorator(fn: MethodFn) -> MethodFn:
        if name in _METHODS:
            raise ValueError(
                f"method {name!r} is already registered (by {_METHODS[name].__module__}."
                f"{_METHODS[name].__qualname__}); pick another name"
            )
        _METHODS[name] = fn
        return fn

    return decorator


def get_method(name: str) -> MethodFn:
    """The function registered as `name`; an unknown name is an error naming the setting."""
    if name not in _METHODS:
        raise SettingsError(f"unknown method {name!r} (setting method=...); available: {available_methods()}")
    return _METHODS[name]


def available_methods() -> list[str]:
    """Names of the methods a config may choose."""
    return sorted(_METHODS)
