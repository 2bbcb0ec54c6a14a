"""Run config (Flower, flat, hyphenated) <-> Hydra config (`conf/` on the schema `fed_uml.schema`).

Flower owns the app processes, so Hydra cannot be their entry point. Both apps compose the
same `conf/config.yaml` with the Hydra compose API and apply the run-config values as
overrides. Which settings are run-config keys, under which names and types, is declared on
the settings themselves (`fed_uml.schema.fields.run_config`) and derived here
(`RUN_CONFIG_KEYS`). `[tool.flwr.app.config]` in pyproject.toml, which Flower reads, lists
exactly those keys with the schema's defaults (a test checks that), so `flwr run .` and
`python -m experiments.run` start from the same settings.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from omegaconf import MISSING

from fed_uml.errors import SettingsError
from fed_uml.schema import Settings, settings_of
from fed_uml.schema.convert import GROUPS as GROUP_SCHEMAS
from fed_uml.schema.reference import Declared, declared
from fed_uml.schema.store import register


def _run_config_settings() -> dict[str, Declared]:
    """run-config key -> the setting that declares it (`fed_uml.schema`, field metadata)."""
    out = {}
    for setting in declared(Settings):
        if setting.run_config:
            out[setting.run_config] = setting
        if setting.is_group:  # a group's own settings may be run-config keys too (dataset.root)
            _, table, base = GROUP_SCHEMAS[setting.path]
            for schema in dict.fromkeys([base, *table.values()]):
                out.update({s.run_config: s for s in declared(schema, f"{setting.path}.") if s.run_config})
    return out


RUN_CONFIG_SETTINGS: dict[str, Declared] = _run_config_settings()
# run-config key -> Hydra path ("overrides": any Hydra overrides, applied last)
RUN_CONFIG_KEYS: dict[str, str] = {**{k: s.path for k, s in RUN_CONFIG_SETTINGS.items()}, "overrides": ""}
# Config groups: their run-config value is the name of a choice.
GROUPS = tuple(k for k, s in RUN_CONFIG_SETTINGS.items() if s.is_group)


def run_config_types(setting: Declared) -> tuple[type, ...]:
    """The Python types a run-config value of `setting` may have (TOML gives int, float, bool, str).

    The setting's type, an int where a float is expected, and a comma-separated string for a list.
    """
    union = typing.get_origin(setting.type) in (typing.Union, types.UnionType)
    kinds = typing.get_args(setting.type) if union else (setting.type,)
    out: list[type] = []
    for kind in kinds:
        if kind is type(None):
            continue
        kind = typing.get_origin(kind) or kind
        if kind is list or setting.is_group:
            kind = str
        out += [int, float] if kind is float else [kind]
    return tuple(dict.fromkeys(out))


def choice_dependent(setting: Declared) -> bool:
    """Whether the setting's default is not one constant (it depends on the group choices or on the machine).

    pyproject.toml then holds "", which means "keep what Hydra composes".
    """
    default = setting.default
    return default is None or default is MISSING or (isinstance(default, str) and "${" in default)


# A config-group choice names a choice of conf/<group>/ or of the schema: no path, no Hydra grammar.
_PLAIN_NAME = re.compile(r"\w[\w-]*")


def _check_group_value(key: str, group: str, value: object) -> None:
    if not _PLAIN_NAME.fullmatch(str(value)):
        raise SettingsError(f"run-config key {key!r}: {group}={value!r} must be the plain name of a {group} "
                            "(no path, no spaces or Hydra syntax)")


def _check_type(key: str, value: object) -> None:
    if value == "" or key not in RUN_CONFIG_SETTINGS or RUN_CONFIG_SETTINGS[key].is_group:
        return
    expected = run_config_types(RUN_CONFIG_SETTINGS[key])
    if not isinstance(value, expected) or (bool not in expected and isinstance(value, bool)):
        names = " or ".join(t.__name__ for t in expected)
        raise SettingsError(f"run-config key {key!r} must be {names}, got {value!r}")


def conf_dir() -> Path:
    """The Hydra config folder, wherever fed-uml runs from, found without any setting.

    Also registers the schema (`fed_uml.schema.store`) with Hydra, which every composition of
    conf/ needs: whatever composes (the compose API, `hydra.main`) asks for this folder first.
    An installed package (a wheel, `pip install .`) carries `conf/` as package data inside
    `fed_uml` (`fed_uml/conf`, see setup.py); a source tree (the repository, an editable
    install, or the app bundle that `flwr run` ships) has it beside `fed_uml/`.
    """
    register()  # the schema, which conf/config.yaml starts from
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "conf", package.parent / "conf")
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise FileNotFoundError("fed-uml's settings (conf/config.yaml) are in none of "
                            f"{[str(c) for c in candidates]}: reinstall the package")


def _override_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # quoted: Hydra's grammar accepts double-quoted strings
    return str(value)


def run_config_to_overrides(run_config: Mapping[str, Any]) -> list[str]:
    """Hydra overrides equivalent to a Flower run config; unknown keys are an error.

    Order: group choices, then the mapped keys, then the free-form `overrides` string, so
    that `overrides` wins; for a key given twice only the last value is kept.
    """
    unknown = sorted(set(run_config) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise SettingsError(f"unknown run-config key(s) {unknown}; known keys: {sorted(RUN_CONFIG_KEYS)}")
    groups, keys = [], []
    for key, value in run_config.items():
        path = RUN_CONFIG_KEYS[key]
        if key == "overrides" or value == "":
            continue
        _check_type(key, value)
        if key in GROUPS:
            _check_group_value(key, key, value)
            groups.append(f"{path}={value}")
        elif typing.get_origin(RUN_CONFIG_SETTINGS[key].type) is list:  # comma-separated
            names = [m.strip() for m in str(value).split(",") if m.strip()]
            keys.append(f"{path}=[{','.join(names)}]")
        else:
            keys.append(f"{path}={_override_value(value)}")
    try:
        free = shlex.split(str(run_config.get("overrides", "")))
    except ValueError as e:
        raise SettingsError(f"run-config key 'overrides'={run_config.get('overrides')!r}: {e}") from None
    for override in free:
        name, _, value = override.partition("=")
        if name.lstrip("+~") in GROUPS:
            _check_group_value("overrides", name.lstrip("+~"), value)
    last: dict[str, str] = {}
    for override in groups + keys + free:
        last.pop(override.split("=", 1)[0], None)
        last[override.split("=", 1)[0]] = override
    return sorted(last.values(), key=lambda o: o.split("=", 1)[0].lstrip("+~") not in GROUPS)


@functools.lru_cache(maxsize=64)
def _compose_cached(overrides: tuple[str, ...]) -> str:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="fed_uml"):
        try:
            cfg = compose("config", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as e:  # a bad override: the user's to fix
            reasons = [str(x).strip().splitlines()[0] for x in (e, e.__cause__) if x is not None and str(x).strip()]
            raise SettingsError(f"settings {list(overrides)}: {': '.join(reasons)}") from None
        return json.dumps(OmegaConf.to_container(cfg, resolve=False))


@functools.lru_cache(maxsize=64)
def _resolved_cached(overrides: tuple[str, ...], values_json: str = "{}") -> str:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    raw = json.loads(_compose_cached(overrides))
    raw.pop("hydra", None)
    if isinstance(raw.get("results_dir"), str) and "${hydra:" in raw["results_dir"]:
        raw["results_dir"] = None
    node = OmegaConf.create(raw)
    for path, value in json.loads(values_json).items():  # before resolving, as a Hydra override
        try:
            OmegaConf.update(node, path, value, merge=True)
        except OmegaConfBaseException as e:
            raise SettingsError(f"setting {path}={value!r}: {str(e).strip().splitlines()[0]}") from None
    resolved = OmegaConf.to_container(node, resolve=True)
    assert isinstance(resolved, dict)
    # what `values` or `+key=value` added, which Hydra lets into a schema (the cast: `to_container`
    # types the keys as any DictKeyType; a composed config's are str)
    settings_of(cast("dict[str, Any]", resolved))
    return json.dumps(resolved)


def compose_config(overrides: list[str] | tuple[str, ...] = (),
                   values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved config as plain containers, a fresh copy per call, checked against the schema.

    Hydra's own `hydra:` resolvers are not used; the config's interpolations refer only to the
    config itself, so the resolved form is cached: resolving costs more than an institution's round
    of training.

    `values` sets settings by dotted path ({"training.lr": 0.01}) as value overrides do, after
    `overrides` (which take the group choices); a composition of the groups is made once, and
    each set of values costs a tenth of it (the tests compose many variants of a few).
    """
    return json.loads(_resolved_cached(tuple(overrides), json.dumps(dict(values or {}))))


def config_from_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The composed config a run config stands for."""
    return compose_config(tuple(run_config_to_overrides(run_config)))


def default_run_config() -> dict[str, Any]:
    """Run-config values equal to the schema's defaults.

    What `[tool.flwr.app.config]` must hold ("" where the default depends on the group choices or
    the machine, `choice_dependent`).
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="fed_uml"):
        choices = compose("config", return_hydra_config=True).hydra.runtime.choices
    out = {}
    for key, setting in RUN_CONFIG_SETTINGS.items():
        if setting.is_group:
            out[key] = choices[key]
        elif choice_dependent(setting):
            out[key] = ""
        else:
            out[key] = setting.default
    out["overrides"] = ""
    return out


def run_config_from_overrides(overrides: list[str] | tuple[str, ...], **keys: object) -> dict[str, Any]:
    """A run config that makes the Flower apps compose exactly `overrides`.

    The overrides are e.g. a Hydra job's command-line overrides, plus run-config keys such as
    `results-dir`.
    """
    out = {k: v for k, v in keys.items()}
    out["overrides"] = shlex.join(list(overrides))
    unknown = sorted(set(out) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise SettingsError(f"unknown run-config key(s) {unknown}")
    return out
