"""Reading the schema itself: every setting with its path, type, default, run-config key and description.

Why here: the run-config key table (`fed_uml.federated.config`), pyproject.toml's check and the
generated settings reference (docs/hooks/generated.py) all walk the same dataclasses, and each
setting's description is the docstring under its field (an attribute docstring, as
mkdocstrings reads it), which Python does not keep at run time: it is read from the source.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Any

from omegaconf import MISSING

from fed_uml.schema.fields import RUN_CONFIG


@dataclasses.dataclass(frozen=True)
class Declared:
    """One setting as the schema declares it."""

    path: str
    """Dotted path in the composed config (`federated.num_rounds`)."""
    type: Any
    """The field's type hint (`int`, `float | None`, a schema class for a group)."""
    default: Any
    """The default (`MISSING`: set by the group's choice, e.g. a data set's yaml file)."""
    run_config: str | None
    """Its run-config key, if the Flower apps take it as one."""
    owner: type
    """The schema class that declares it."""

    @property
    def name(self) -> str:
        """The setting's own name, the last part of its dotted path."""
        return self.path.rpartition(".")[2]

    @property
    def is_group(self) -> bool:
        """A config group (dataset, model, method): its schema depends on the choice."""
        return dataclasses.is_dataclass(self.type) and self.default is MISSING

    @property
    def doc(self) -> str:
        """The description: the field's attribute docstring, or the class docstring of a group.

        Read from the source when asked: the run-config table, read by every process of a run, does
        not need it.
        """
        doc = field_docs(self.owner).get(self.name) or (class_doc(self.type) if self.is_group else "")
        return " ".join(doc.split())


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: its attribute docstring} of a dataclass and its bases (the nearest one wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        assert isinstance(body, ast.ClassDef)
        for node, after in zip(body.body, body.body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def class_doc(cls: type) -> str:
    """A schema class's own docstring, as one paragraph."""
    return " ".join(inspect.cleandoc(cls.__doc__ or "").split())


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return MISSING


def declared(cls: type, prefix: str = "") -> Iterator[Declared]:
    """Every setting of schema `cls`, depth first.

    A mapping with a schema of its own (a nested dataclass) yields its own settings, not itself; a
    group yields itself.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind: Any = hints[field.name]
        default = _default(field)
        path = f"{prefix}{field.name}"
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) and default is not MISSING:
            yield from declared(kind, f"{path}.")
            continue
        yield Declared(path, kind, default, field.metadata.get(RUN_CONFIG), cls)


def type_name(kind: Any) -> str:
    """A type hint as the docs show it: `int`, `float | None`, `list[str]`, `int | float`."""
    if dataclasses.is_dataclass(kind):
        return "mapping"
    if kind is Any:
        return "any"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is None:
        return getattr(kind, "__name__", str(kind))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
