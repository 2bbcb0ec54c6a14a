"""MkDocs hook: the reference pages that are generated, not written, so they cannot drift.

A page holds a marker line where the generated Markdown goes:

- `<!-- generated: settings -->`: every setting, from the typed schema `fed_uml/schema/` (its
  path, type, default and the docstring under its field), group by group; each data set's own
  values from its conf/dataset/<name>.yaml (with the comments above them);
- `<!-- generated: run-config -->`: every run-config key of the Flower apps, derived from the
  schema (`fed_uml.federated.config.RUN_CONFIG_SETTINGS`), with the setting it maps onto;
- `<!-- generated: commands -->`: every `fed-uml` command, from the one table the console
  script dispatches with (`experiments.commands.COMMANDS`), with its `python -m` module and
  its module's description.

`python docs/hooks/generated.py settings|run-config|commands` prints the same Markdown (tests
read it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
MARKER = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)
# Hydra's own sections and the group list are not settings of fed-uml
SKIPPED = ("defaults", "hydra")


def yaml_settings(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(the file's leading comment, [(dotted key, default as written, comment above it)]).

    The comment block a file starts with describes the file; any other comment describes the
    key on the line after it (a mapping's comment, its first key). Values are the YAML
    text as written, so interpolations (`${seed}`) show as such.
    """
    lines = text.splitlines()
    head = []
    while lines and lines[0].startswith("#"):
        head.append(lines.pop(0).lstrip("# ").rstrip())
    rows, comment, parents = [], [], []  # parents: (indent, key)
    for line in lines:
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# ").rstrip())
            continue
        match = re.match(r"^(\s*)([\w-]+):(?:\s+(.*))?$", line)
        if not match:
            continue  # a list item of a block list
        indent, key, value = len(match.group(1)), match.group(2), (match.group(3) or "").strip()
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = [k for _, k in parents] + [key]
        if value.split(" #")[0] == "":  # a mapping (or block list) starts
            parents.append((indent, key))
            continue
        if path[0] in SKIPPED:
            comment = []
            continue
        value, _, inline = value.partition(" #")
        text_ = " ".join(comment + ([inline.strip()] if inline.strip() else []))
        rows.append((".".join(path), value.strip(), text_))
        comment = []
    return " ".join(head), rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _import_project() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def default_text(value: Any) -> str:
    """A default as the yaml would write it (`MISSING`: set by each choice of the group)."""
    from omegaconf import MISSING

    if value is MISSING:
        return "(per choice)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(default_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {default_text(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return default_text(dataclasses.asdict(value))
    return str(value)


def setting_row(setting) -> str:
    """One row of a settings table: | `path` | type | `default` | what it does |."""
    from fed_uml.schema.reference import type_name

    doc = setting.doc + (f" Run-config key `{setting.run_config}`." if setting.run_config else "")
    kind, default = _cell(type_name(setting.type)), _cell(default_text(setting.default))
    return f"| `{setting.path}` | {kind} | `{default}` | {_cell(doc)} |"


TABLE_HEAD = ["| setting | type | default | what it does |", "|---|---|---|---|"]


def _schema_table(schema: type, prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    from fed_uml.schema.reference import declared

    rows = [setting_row(s) for s in declared(schema, prefix) if not s.is_group and s.path not in skip]
    return TABLE_HEAD + rows + [""] if rows else []


def settings_markdown(conf: Path = CONF) -> str:
    """The settings reference: every setting of the schema, then each data set's own values."""
    _import_project()
    from fed_uml.schema import DATASETS, METHODS, MODELS, DatasetSettings, Settings
    from fed_uml.schema.reference import class_doc, declared

    out = ["### Top level", "", class_doc(Settings), ""]
    top = [s for s in declared(Settings) if "." not in s.path and not s.is_group]
    out += TABLE_HEAD + [setting_row(s) for s in top] + [""]
    nested = dict.fromkeys(s.path.split(".")[0] for s in declared(Settings) if "." in s.path)
    for name in nested:
        schema = type(getattr(Settings(), name))
        out += [f"### `{name}`", "", class_doc(schema), ""] + _schema_table(schema, f"{name}.")
    for group, table, field in (("method", METHODS, "name"), ("model", MODELS, "backbone")):
        out += [f"### `{group}`", "", f"A choice of the group, `{group}=<{field}>`: each is a class of the schema.", ""]
        for choice, schema in table.items():
            out += [f"#### `{group}={choice}`", "", f"`{schema.__module__}.{schema.__name__}`: {class_doc(schema)}", ""]
            out += _schema_table(schema, f"{group}.")
    out += ["### `dataset`", "", "A choice of the group, `dataset=<name>`: conf/dataset/<name>.yaml holds what differs "
            "per data set and is composed onto the schema of its kind (`fed_uml.schema.datasets.DATASETS`).", ""]
    out += [f"#### Every data set: `{DatasetSettings.__module__}.{DatasetSettings.__name__}`", "",
            class_doc(DatasetSettings), ""] + _schema_table(DatasetSettings, "dataset.")
    for schema in dict.fromkeys(DATASETS.values()):
        users = ", ".join(f"`{n}`" for n, s in DATASETS.items() if s is schema)
        parent = schema.__mro__[1]  # its settings that differ from its base's
        inherited = {(s.path, repr(s.default)) for s in declared(parent, "dataset.")}
        rows = [setting_row(s) for s in declared(schema, "dataset.") if (s.path, repr(s.default)) not in inherited]
        out += [f"#### `{schema.__module__}.{schema.__name__}` ({users})", "",
                f"{class_doc(schema)} The settings of `{parent.__name__}`, and:", ""] + TABLE_HEAD + rows + [""]
    for path in sorted(conf.glob("dataset/*.yaml")):
        about, rows = yaml_settings(path.read_text(encoding="utf-8"))
        out += [f"#### `dataset={path.stem}`", "", f"`conf/dataset/{path.name}`" + (f": {about}" if about else ""), ""]
        out += ["| setting | value | what it does |", "|---|---|---|"]
        out += [f"| `dataset.{key}` | `{_cell(value)}` | {_cell(text)} |" for key, value, text in rows]
        out.append("")
    return "\n".join(out)


def run_config_markdown() -> str:
    """The run-config keys of the Flower apps: each with the setting it maps onto, its type, the
    value `[tool.flwr.app.config]` gives it and what it does."""
    _import_project()
    from fed_uml.federated.config import RUN_CONFIG_SETTINGS, choice_dependent, default_run_config, run_config_types

    defaults = default_run_config()
    out = ["| key | Hydra setting | type | default | what it does |", "|---|---|---|---|---|"]
    for key, setting in RUN_CONFIG_SETTINGS.items():
        kind = " or ".join(t.__name__ for t in run_config_types(setting))
        if setting.is_group:
            kind, doc = "str", setting.doc
        else:
            doc = setting.doc + (" Comma-separated." if "list" in kind or kind == "str" and "list" in str(setting.type)
                                 else "")
        default = '`""` (the composed default)' if choice_dependent(setting) and not setting.is_group else (
            f"`{_cell(default_text(defaults[key]))}`")
        out.append(f"| `{key}` | `{setting.path}` | {kind} | {default} | {_cell(doc)} |")
    out.append('| `overrides` | any | str | `""` | Hydra overrides, applied after the keys above |')
    return "\n".join(out) + "\n"


def commands_markdown() -> str:
    _import_project()
    from experiments.commands import COMMANDS, description, group_members, is_group

    out = ["| command | the same as | what it does |", "|---|---|---|"]
    for name, module in COMMANDS.items():
        if is_group(module):
            for member, sub in group_members(module).items():
                out.append(f"| `fed-uml {name} {member}` | `python -m {sub}` | {_cell(description(sub))} |")
        else:
            out.append(f"| `fed-uml {name}` | `python -m {module}` | {_cell(description(module))} |")
    return "\n".join(out) + "\n"


GENERATORS = {"settings": settings_markdown, "run-config": run_config_markdown, "commands": commands_markdown}


def on_page_markdown(markdown: str, **_) -> str:
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


if __name__ == "__main__":
    print(GENERATORS[sys.argv[1]]())
