"""Run config (Flower, flat, hyphenated) <-> Hydra config (`conf/`, the source of truth).

Flower owns the app processes, so Hydra cannot be their entry point. Both apps compose the
same `conf/config.yaml` with the Hydra compose API and apply the run-config values as
overrides. `[tool.flwr.app.config]` in pyproject.toml lists exactly `RUN_CONFIG_KEYS` with
the values Hydra composes by default (a test checks that), so `flwr run .` and
`python -m experiments.run` start from the same settings.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from fed_uml.errors import SettingsError

# run-config key -> Hydra path. Group choices (dataset, model, method) are config groups.
RUN_CONFIG_KEYS: dict[str, str] = {
    "method": "method",
    "dataset": "dataset",
    "model": "model",
    "modalities": "dataset.modalities",
    "data-root": "dataset.root",
    "seed": "seed",
    "num-server-rounds": "federated.num_rounds",
    "local-epochs": "federated.local_epochs",
    "local-steps": "federated.local_steps",
    "institutions-per-modality": "federated.institutions_per_modality",
    "partitioning": "federated.partitioning",
    "dirichlet-alpha": "federated.dirichlet_alpha",
    "weighting": "federated.weighting",
    "fraction-train": "federated.fraction_train",
    "fraction-evaluate": "federated.fraction_evaluate",
    "fraction-calibrate": "federated.fraction_calibrate",
    "min-institutions": "federated.min_institutions",
    "evaluate-every": "federated.evaluate_every",
    "round-timeout": "federated.round_timeout",
    "max-in-flight": "federated.max_in_flight",
    "describe-upfront": "federated.describe_upfront",
    "delivery-index": "federated.delivery_index",
    "transfer-dtype": "federated.transfer_dtype",
    "secure-aggregation": "federated.secure_aggregation",
    "secure-num-shares": "federated.secure_num_shares",
    "secure-reconstruction-threshold": "federated.secure_reconstruction_threshold",
    "secure-clipping-range": "federated.secure_clipping_range",
    "secure-quantization-range": "federated.secure_quantization_range",
    "secure-modulus-range": "federated.secure_modulus_range",
    "dp-noise-multiplier": "federated.dp_noise_multiplier",
    "dp-clipping-norm": "federated.dp_clipping_norm",
    "dp-clipping": "federated.dp_clipping",
    "dp-target-quantile": "federated.dp_target_quantile",
    "dp-clip-learning-rate": "federated.dp_clip_learning_rate",
    "dp-clipped-count-stddev": "federated.dp_clipped_count_stddev",
    "dp-delta": "federated.dp_delta",
    "calibration-epochs": "calibration.epochs",
    "num-threads": "num_threads",
    "results-dir": "results_dir",
    "resume": "resume",
    "state-dir": "federated.state_dir",
    "stop-after-round": "federated.stop_after_round",
    "audit-log": "federated.audit_log",
    "overrides": "",
}
GROUPS = ("dataset", "model", "method")
# Keys whose default depends on the chosen groups (or on the machine): in pyproject.toml
# they hold "", which means "keep what Hydra composes".
GROUP_DEPENDENT = ("modalities", "data-root", "results-dir", "audit-log", "state-dir")
# Types of the run-config values ("" always means "keep what Hydra composes").
RUN_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "seed": int, "num-server-rounds": int, "local-epochs": int, "local-steps": int, "min-institutions": int,
    "max-in-flight": int, "evaluate-every": int, "calibration-epochs": int, "num-threads": int,
    "dirichlet-alpha": (int, float),
    "fraction-train": (int, float), "fraction-evaluate": (int, float), "fraction-calibrate": (int, float),
    "round-timeout": (int, float), "resume": bool, "describe-upfront": bool, "delivery-index": bool,
    "institutions-per-modality": (int, str),
    # privacy (docs/privacy.md)
    "secure-aggregation": bool,
    "secure-num-shares": (int, float),
    "secure-reconstruction-threshold": (int, float),
    "secure-clipping-range": (int, float),
    "secure-quantization-range": int,
    "secure-modulus-range": int,
    "dp-noise-multiplier": (int, float),
    "dp-clipping-norm": (int, float),
    "dp-target-quantile": (int, float),
    "dp-clip-learning-rate": (int, float),
    "dp-clipped-count-stddev": (int, float),
    "dp-delta": (int, float),
}
# A config-group choice names a yaml file in conf/<group>/: no path, no Hydra grammar.
_PLAIN_NAME = re.compile(r"\w[\w-]*")


def _check_group_value(key: str, group: str, value) -> None:
    if not _PLAIN_NAME.fullmatch(str(value)):
        raise SettingsError(f"run-config key {key!r}: {group}={value!r} must be the plain name of a config in "
                         f"conf/{group}/ (no path, no spaces or Hydra syntax)")


def _check_type(key: str, value) -> None:
    expected = RUN_CONFIG_TYPES.get(key)
    if expected is None or value == "":
        return
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise SettingsError(f"run-config key {key!r} must be {names}, got {value!r}")


def conf_dir() -> Path:
    """The Hydra config folder, wherever fed-uml runs from, found without any setting.

    An installed package (a wheel, `pip install .`) carries `conf/` as package data inside
    `fed_uml` (`fed_uml/conf`, see setup.py); a source tree (the repository, an editable
    install, or the app bundle that `flwr run` ships) has it beside `fed_uml/`.
    """
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "conf", package.parent / "conf")
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise FileNotFoundError("fed-uml's settings (conf/config.yaml) are in none of "
                            f"{[str(c) for c in candidates]}: reinstall the package")


def _override_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # quoted: Hydra's grammar accepts double-quoted strings
    return str(value)


def run_config_to_overrides(run_config: Mapping) -> list[str]:
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
        elif key == "modalities":
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


@functools.lru_cache(maxsize=32)
def _compose_cached(overrides: tuple[str, ...]) -> str:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="fed_uml"):
        try:
            cfg = compose("config", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as e:  # a bad override: the user's to fix
            raise SettingsError(f"settings {list(overrides)}: {str(e).strip().splitlines()[0]}") from None
        return json.dumps(OmegaConf.to_container(cfg, resolve=False))


@functools.lru_cache(maxsize=32)
def _resolved_cached(overrides: tuple[str, ...]) -> str:
    from omegaconf import OmegaConf

    raw = json.loads(_compose_cached(overrides))
    raw.pop("hydra", None)
    if isinstance(raw.get("results_dir"), str) and "${hydra:" in raw["results_dir"]:
        raw["results_dir"] = None
    return json.dumps(OmegaConf.to_container(OmegaConf.create(raw), resolve=True))


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The resolved config as plain containers, a fresh copy per call (Hydra's own `hydra:`
    resolvers are not used; the config's interpolations refer only to the config itself, so
    the resolved form is cached: resolving costs more than an institution's round of training)."""
    return json.loads(_resolved_cached(tuple(overrides)))


def config_from_run_config(run_config: Mapping) -> dict:
    return compose_config(tuple(run_config_to_overrides(run_config)))


def get_path(cfg: Mapping, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def default_run_config() -> dict:
    """Run-config values equal to Hydra's defaults: what `[tool.flwr.app.config]` must hold."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="fed_uml"):
        cfg = compose("config", return_hydra_config=False)
        choices = {g: compose("config", return_hydra_config=True).hydra.runtime.choices[g] for g in GROUPS}
    cfg = OmegaConf.to_container(cfg, resolve=False)
    out = {}
    for key, path in RUN_CONFIG_KEYS.items():
        if key == "overrides" or key in GROUP_DEPENDENT:
            out[key] = ""
        elif key in GROUPS:
            out[key] = choices[key]
        else:
            out[key] = get_path(cfg, path)
    return out


def run_config_from_overrides(overrides: list[str] | tuple[str, ...], **keys) -> dict:
    """A run config that makes the Flower apps compose exactly `overrides` (e.g. a Hydra
    job's command-line overrides), plus run-config keys such as `results-dir`."""
    out = {k: v for k, v in keys.items()}
    out["overrides"] = shlex.join(list(overrides))
    unknown = sorted(set(out) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise SettingsError(f"unknown run-config key(s) {unknown}")
    return out
