"""Every setting declared once (`fed_uml/schema/`): conf/, pyproject.toml's run config, the typed
settings objects and the entry points that read them, each checked against the schema.

(The generated settings and run-config references are checked in tests/test_docs.py; each
compared method's defaults in tests/test_baselines.py.)"""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
import yaml
from omegaconf import MISSING, OmegaConf

from fed_uml.errors import SettingsError
from fed_uml.federated.config import (
    RUN_CONFIG_KEYS,
    RUN_CONFIG_SETTINGS,
    compose_config,
    conf_dir,
    config_from_run_config,
    default_run_config,
    run_config_to_overrides,
    run_config_types,
)
from fed_uml.schema import (
    DATASETS,
    METHODS,
    MODELS,
    MultiLabelDatasetSettings,
    RealDatasetSettings,
    Settings,
    SyntheticDatasetSettings,
    settings_of,
)
from fed_uml.schema.methods import CDANSettings
from fed_uml.schema.models import ResNet18Settings
from fed_uml.schema.reference import declared
from tests.conftest import REPO, tiny_config

CONF = REPO / "conf"
DATASET_FILES = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))


def _hydra(overrides: list[str]):
    """The composed DictConfig itself (it keeps the schema classes as node types)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


# ----------------------------------------------------------------------------- conf/ against the schema


@pytest.mark.parametrize("name", DATASET_FILES)
def test_every_data_set_file_composes_onto_its_schema(name):
    """...the schema of its kind, as the data layer knows it: synthetic, real, real and multi-label."""
    from fed_uml.data.catalog import BUILTIN, REAL_READERS

    assert name in DATASETS, f"conf/dataset/{name}.yaml has no schema in fed_uml.schema.datasets.DATASETS"
    assert name in BUILTIN
    kind = DATASETS[name]
    assert (kind is SyntheticDatasetSettings) == (name == "synthetic")
    assert issubclass(kind, RealDatasetSettings) == (name in REAL_READERS)
    multi_label = name in REAL_READERS and all(r.MULTI_LABEL for r in REAL_READERS[name].values())
    assert issubclass(kind, MultiLabelDatasetSettings) == multi_label
    assert OmegaConf.get_type(_hydra([f"dataset={name}"]).dataset) is DATASETS[name]
    settings = settings_of(compose_config([f"dataset={name}"]))
    assert type(settings.dataset) is DATASETS[name] and settings.dataset.name == name


@pytest.mark.parametrize("name", DATASET_FILES)
def test_no_data_set_file_restates_a_default_of_its_schema(name):
    """One declaration: a value every data set of the kind shares belongs to the schema, a value
    of one data set to its file, never to both."""
    written = yaml.safe_load((CONF / "dataset" / f"{name}.yaml").read_text())
    defaults = {s.path: s.default for s in declared(DATASETS[name]) if s.default is not MISSING}
    restated = sorted(key for key, value in written.items() if key in defaults and value == _plain(defaults[key]))
    assert not restated, f"conf/dataset/{name}.yaml restates the schema's defaults of {restated}"


def _plain(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def test_the_only_yaml_files_are_the_group_list_and_the_data_sets():
    """A yaml file beside a choice the schema declares (conf/method/cdan.yaml) would replace the
    class, untyped, and be a second declaration of its defaults."""
    assert sorted(p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")) == sorted(
        ["config.yaml"] + [f"dataset/{n}.yaml" for n in DATASET_FILES])
    assert {"method", "model"} <= {s.path for s in declared(Settings) if s.is_group}
    assert set(METHODS) >= {"uml", "unimodal", "pooled", "dann", "cdan", "mdd", "mcc", "isca"}
    assert set(MODELS) == {"small_cnn", "resnet18"}


def test_every_choice_composes_to_its_schema_defaults():
    for group, table in (("method", METHODS), ("model", MODELS)):
        for name, schema in table.items():
            assert compose_config([f"{group}={name}"])[group] == dataclasses.asdict(schema()), (group, name)
    cfg = compose_config()
    assert cfg["training"] == dataclasses.asdict(Settings().training)
    assert cfg["federated"] == dataclasses.asdict(Settings().federated)


# ----------------------------------------------------------------------------- pyproject.toml against the schema


def test_pyproject_run_config_is_the_schemas():
    """[tool.flwr.app.config] (hand-written: Flower reads it) lists exactly the run-config keys the
    schema declares, each with a value of the setting's type and the schema's default."""
    app_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    missing, extra = sorted(set(RUN_CONFIG_KEYS) - set(app_config)), sorted(set(app_config) - set(RUN_CONFIG_KEYS))
    assert not missing and not extra, f"pyproject.toml lacks the run-config keys {missing}, holds unknown {extra}"
    run_config_to_overrides(app_config)  # every value of its setting's type, or a SettingsError naming the key
    expected = default_run_config()
    wrong = {k: (v, expected[k]) for k, v in app_config.items() if v != expected[k]}
    assert not wrong, f"pyproject.toml's values differ from the schema's defaults (pyproject, schema): {wrong}"


def test_run_config_keys_and_types_come_from_the_schema():
    assert RUN_CONFIG_KEYS["num-server-rounds"] == "federated.num_rounds"
    assert RUN_CONFIG_KEYS["data-root"] == "dataset.root" and RUN_CONFIG_KEYS["method"] == "method"
    types = {k: run_config_types(s) for k, s in RUN_CONFIG_SETTINGS.items()}
    assert types["num-server-rounds"] == (int,) and types["dirichlet-alpha"] == (int, float)
    assert types["institutions-per-modality"] == (int, str) and types["resume"] == (bool,)
    assert types["modalities"] == (str,) and types["results-dir"] == (str,)
    for key, value in (("partitioning", 3), ("resume", 1), ("num-server-rounds", 2.5), ("fraction-train", True)):
        with pytest.raises(SettingsError, match=f"run-config key '{key}' must be"):
            config_from_run_config({key: value})
    assert config_from_run_config({"modalities": "sar, rgb", "round-timeout": 60})["dataset"]["modalities"] == [
        "sar", "rgb"]


# ----------------------------------------------------------------------------- names and types, by name


@pytest.mark.parametrize("override, named", [
    ("training.epochz=3", r"Key 'epochz' not in 'TrainingSettings'"),
    ("training.epochs=many", r"training\.epochs.*could not be converted to Integer"),
    ("method.trade_off=2", r"Key 'trade_off' not in 'UMLSettings'"),
    ("dataset.noise.sar_lokks=2", r"Key 'sar_lokks' not in 'SensorNoise'"),
    ("federated.describe_upfront=maybe", r"federated\.describe_upfront"),
    ("+federated.extra=1", r"unknown setting 'federated\.extra'; the settings of federated are: num_rounds"),
])
def test_composing_refuses_an_unknown_setting_or_a_wrong_type_by_name(override, named):
    with pytest.raises(SettingsError, match=named):
        compose_config([override])


def test_values_set_settings_as_overrides_do():
    """`compose_config(overrides, values)`: the same config as the overrides would give, the
    values applied before resolving (dataset.seed follows seed), checked against the schema."""
    by_values = compose_config(["method=dann"], {"seed": 7, "training.lr": 0.01, "dataset.modalities": ["rgb", "sar"],
                                                 "dataset.samples_per_class": {"rgb": 2, "sar": 3}})
    assert by_values == compose_config(["method=dann", "seed=7", "training.lr=0.01", "dataset.modalities=[rgb,sar]",
                                        "dataset.samples_per_class={rgb:2,sar:3}"])
    assert by_values["dataset"]["seed"] == 7
    with pytest.raises(SettingsError, match=r"unknown setting 'training\.epochz'"):
        compose_config([], {"training.epochz": 1})
    with pytest.raises(SettingsError, match=r"training\.epochs: Value 'many'"):
        compose_config([], {"training.epochs": "many"})


def test_typed_settings_of_a_composed_config():
    cfg = compose_config(["method=cdan", "model=resnet18", "dataset=bigearthnet", "dataset.task=single_label",
                          "federated.round_timeout=60"])
    s = settings_of(cfg)
    assert isinstance(s, Settings) and isinstance(s.method, CDANSettings) and isinstance(s.model, ResNet18Settings)
    assert isinstance(s.dataset, MultiLabelDatasetSettings)
    assert s.method.entropy_conditioning is False and s.model.small_input is True
    assert s.dataset.num_classes is None and s.dataset.train_splits == ["train"]  # resolved for the task
    assert s.federated.round_timeout == 60.0 and isinstance(s.federated.round_timeout, float)
    s.federated.num_rounds = 1
    assert settings_of(cfg).federated.num_rounds == 30, "each call gives a fresh object"


@pytest.mark.parametrize("path, value, named", [
    ("training.epochz", 3, r"unknown setting 'training\.epochz'; the settings of training are: epochs"),
    ("federated.num_rounds", "many", r"setting federated\.num_rounds: Value 'many'"),
    ("method.trade_of", 1.0, r"unknown setting 'method\.trade_of'; the settings of method are: .*trade_off"),
    ("decision.thresholds", ["fixed"], r"decision\.thresholds"),
])
def test_typed_settings_refuse_a_config_built_otherwise_by_name(path, value, named):
    cfg = compose_config(["method=cdan"])
    *parents, leaf = path.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(SettingsError, match=named):
        settings_of(cfg)


# ----------------------------------------------------------------------------- the entry points read typed settings


def test_entry_points_refuse_a_misspelt_setting_before_any_work(monkeypatch, tmp_path):
    import fed_uml.centralized as centralized
    import fed_uml.federated.institution as institution
    from fed_uml.federated.roles import InstitutionId
    from server.rounds import FederatedRun

    def refuse(*a, **k):
        raise AssertionError("data was read before the settings were checked")

    monkeypatch.setattr(centralized, "load_dataset", refuse)
    monkeypatch.setattr(institution, "_load_modality", refuse)
    cfg = tiny_config()
    cfg["federated"]["num_round"] = 3
    with pytest.raises(SettingsError, match=r"unknown setting 'federated\.num_round'"):
        centralized.run_centralized(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SettingsError, match=r"unknown setting 'federated\.num_round'"):
        FederatedRun(None, cfg, tmp_path / "fed")  # type: ignore[arg-type]  # fails before it asks the grid
    with pytest.raises(SettingsError, match=r"unknown setting 'federated\.num_round'"):
        institution.Institution(cfg, InstitutionId("sar", 0, 2))
