"""Hostile configuration, fuzzed with hypothesis: the run config (Flower) and the Hydra settings,
on the centralized path (`run_centralized` on a composed config) and in the federated pieces
(`parse_counts`, `split_indices`, `BackboneFedAvg`, `to_wire`, `initial_backbone`).

Every bad value must end in a clear error that names the setting (or, for a config group,
Hydra's "Could not find '<group>/<name>'"), before any work is done where possible; never an
obscure exception from torch or numpy, never silent acceptance. Cases that fuzzing once
caught the library mishandling are marked `regression` with what went wrong. Also:
`write_json_atomic` never damages an existing results.json.

The number of cases each test tried is printed at the end of the module
(`FED_UML_FUZZ_COUNTS=path.json` also writes them; `FED_UML_FUZZ_EXAMPLES` scales them).
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hydra.errors import HydraException
from hypothesis import assume, given
from hypothesis import strategies as st

from fed_uml.centralized import run_centralized
from fed_uml.errors import SettingsError
from fed_uml.federated.backbone import initial_backbone
from fed_uml.federated.config import (
    RUN_CONFIG_KEYS,
    compose_config,
    config_from_run_config,
    run_config_from_overrides,
    run_config_to_overrides,
)
from fed_uml.federated.partition import SCHEMES, split_indices
from fed_uml.federated.roles import institution_for_node, parse_counts
from fed_uml.federated.transfer import WIRE_DTYPES, from_wire, to_wire
from fed_uml.results import write_json_atomic
from fed_uml.schema import METHODS, MODELS
from server.strategy import WEIGHTINGS, BackboneFedAvg
from tests.flower_helpers import TINY
from tests.fuzz_helpers import FUZZ, CaseCounter, fewer

REPO = Path(__file__).resolve().parents[1]
FEW = fewer(3)  # cases that compose with Hydra or train (~0.3 s)
CASES = CaseCounter(__name__)
tick = CASES.tick


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    CASES.report(request)


MODALITIES = ["sar", "rgb"]
# Plain names that Hydra keeps as strings (no null/true/nan/inf, no grammar characters).
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True).filter(
    lambda s: s not in ("null", "true", "false", "nan", "inf", "none"))

# ----------------------------------------------------------------------------- run config keys


@FUZZ
@given(known=st.dictionaries(st.sampled_from(sorted(RUN_CONFIG_KEYS)), st.sampled_from([0, 1, "", "x"]), max_size=4),
       unknown=st.dictionaries(st.text(min_size=1, max_size=30).filter(lambda k: k not in RUN_CONFIG_KEYS),
                               st.one_of(st.integers(), st.text(max_size=5), st.booleans()), min_size=1, max_size=3))
def test_unknown_run_config_keys_are_named(known, unknown):
    tick()
    for fn in (lambda: run_config_to_overrides({**known, **unknown}),
               lambda: run_config_from_overrides(TINY.split(), **unknown)):
        with pytest.raises(ValueError, match="unknown run-config key") as e:
            fn()
        for key in unknown:
            assert repr(key) in str(e.value), (key, str(e.value))


@FEW
@given(group=st.sampled_from(["dataset", "model", "method"]), name=NAME,
       via=st.sampled_from(["run-config", "override"]))
def test_unknown_config_group_choice_is_named(group, name, via):
    """dataset= / model= / method= with a name that is no choice (no yaml, no schema): Hydra's error names it."""
    tick()
    assume(not (REPO / "conf" / group / f"{name}.yaml").exists() and name not in {**METHODS, **MODELS})
    with pytest.raises(SettingsError, match=f"Could not find '{group}/{name}'"):
        if via == "run-config":
            config_from_run_config({group: name})
        else:
            compose_config([f"{group}={name}"])


GROUP_INJECTION = pytest.mark.regression(reason=(
    "run_config_to_overrides passes config-group values into Hydra unchecked: 'dataset=../../../tmp/x' "
    "composes any yaml file on disk as the dataset config and 'x=y' fails with a grammar error that names "
    "neither key nor value; group values should be plain names of files in conf/<group>/ (ValueError naming "
    "the run-config key otherwise)"))


@pytest.mark.parametrize("run_config", [
    pytest.param({"dataset": "../method/uml"}, marks=GROUP_INJECTION, id="dataset-from-another-group"),
    pytest.param({"dataset": "{evil}"}, marks=GROUP_INJECTION, id="dataset-from-outside-conf"),
    pytest.param({"method": "x=y"}, marks=GROUP_INJECTION, id="grammar-character"),
    pytest.param({"overrides": "dataset={evil}"}, marks=GROUP_INJECTION, id="via-free-overrides"),
])
def test_config_group_values_must_be_plain_names(run_config, tmp_path):
    tick()
    (tmp_path / "evil.yaml").write_text("name: synthetic\nsecret: 42\n")
    evil = os.path.relpath(tmp_path / "evil", REPO / "conf" / "dataset")  # ../../../tmp/.../evil
    run_config = {k: v.replace("{evil}", evil) for k, v in run_config.items()}
    with pytest.raises(ValueError) as e:
        config_from_run_config(run_config)
    assert any(k in str(e.value) for k in run_config)


TYPED = pytest.mark.regression(reason=(
    "run-config values are not checked against the types of [tool.flwr.app.config]: 'num-server-rounds=\"x\"' "
    "or 'seed=\"abc\"' compose fine and fail much later (int('x') in the ServerApp: 'invalid literal for "
    "int()'), naming neither key; config_from_run_config should raise ValueError naming the key"))
UNQUOTED = pytest.mark.regression(reason=(
    "an 'overrides' run-config value with an unbalanced quote raises shlex's bare 'No closing quotation', "
    "which does not name the run-config key 'overrides'"))


@pytest.mark.parametrize("run_config,key", [
    pytest.param({"num-server-rounds": "x"}, "num-server-rounds", marks=TYPED, id="rounds-not-int"),
    pytest.param({"seed": "abc"}, "seed", marks=TYPED, id="seed-not-int"),
    pytest.param({"fraction-train": "most"}, "fraction-train", marks=TYPED, id="fraction-not-float"),
    pytest.param({"overrides": "training.lr='0.1"}, "overrides", marks=UNQUOTED, id="unbalanced-quote"),
    pytest.param({"overrides": "nope.key=1"}, "nope.key", id="unknown-hydra-key"),
    pytest.param({"overrides": "seed=[1"}, "[1", id="hydra-grammar"),
])
def test_bad_run_config_values_are_named(run_config, key):
    tick()
    with pytest.raises((ValueError, HydraException)) as e:
        config_from_run_config(run_config)
    assert key in str(e.value), str(e.value)


# ----------------------------------------------------------------------------- federated settings

COUNT = st.one_of(st.integers(-3, 5).map(str), st.sampled_from(["", "x", "1.5", "-0", "+2", " 2", "2 ", "0x2", "1e3"]))
SPEC_PART = st.builds(lambda m, sep, n: f"{m}{sep}{n}", st.sampled_from(["sar", "rgb", "ms", "", " sar", "SAR"]),
                      st.sampled_from([":", "", "::", "="]), COUNT)
SPEC = st.one_of(st.integers(-5, 5), st.lists(SPEC_PART, min_size=1, max_size=4).map(",".join),
                 st.text(st.characters(max_codepoint=127), max_size=20))


@FUZZ
@given(spec=SPEC)
def test_institutions_per_modality(spec):
    """None (round-robin), a count >= 1 for exactly the modalities, or a ValueError naming the setting."""
    tick()
    try:
        counts = parse_counts(spec, MODALITIES)
    except ValueError as e:
        assert "federated.institutions_per_modality" in str(e), str(e)
        return
    if counts is not None:
        assert list(counts) == MODALITIES and all(isinstance(n, int) and n >= 1 for n in counts.values()), counts


COUNTS = pytest.mark.regression(reason=(
    "parse_counts tests digits with str.isdigit(), which accepts superscripts such as '²' that int() refuses, "
    "and converts mapping values with a bare int(): both raise 'invalid literal for int()' without naming "
    "federated.institutions_per_modality (use str.isdecimal() / a regex and wrap the int())"))


@pytest.mark.parametrize("spec", [
    pytest.param("sar:²,rgb:1", marks=COUNTS, id="superscript-count"),
    pytest.param("²", marks=COUNTS, id="superscript-total"),
    pytest.param({"sar": "x", "rgb": 1}, marks=COUNTS, id="mapping-not-int"),
    pytest.param("sar:x,rgb:1", id="letters"),
    pytest.param("sar:-1,rgb:1", id="negative"),
    pytest.param(-2, id="negative-int"),
])
def test_institutions_per_modality_explicit(spec):
    tick()
    with pytest.raises(ValueError, match="federated.institutions_per_modality"):
        parse_counts(spec, MODALITIES)


NODE_CONFIG = pytest.mark.regression(reason=(
    "institution_for_node converts partition-id/num-partitions with a bare int(): a non-numeric value raises "
    "'invalid literal for int()' without naming the node config key, and 1.7 is silently truncated to 1"))


@pytest.mark.parametrize("node_config", [
    pytest.param({"partition-id": "x", "num-partitions": 2, "modality": "sar"}, marks=NODE_CONFIG, id="text"),
    pytest.param({"partition-id": 1.7, "num-partitions": 2, "modality": "sar"}, marks=NODE_CONFIG, id="fraction"),
    pytest.param({"partition-id": 2, "num-partitions": 2, "modality": "sar"}, id="out-of-range"),
    pytest.param({"partition-id": -1, "num-partitions": 2, "modality": "sar"}, id="negative"),
    pytest.param({"partition-id": 0, "num-partitions": 1, "modality": "ms"}, id="unknown-modality"),
])
def test_bad_node_config_is_named(node_config):
    tick()
    with pytest.raises(ValueError, match="node config"):
        institution_for_node(node_config, MODALITIES, 0)


@FUZZ
@given(scheme=st.one_of(st.sampled_from(SCHEMES), st.text(max_size=12)),
       alpha=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3)),
       num_parts=st.integers(-3, 12), part=st.integers(-3, 12), n=st.integers(0, 60),
       classes=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_split_indices_with_bad_settings(scheme, alpha, num_parts, part, n, classes, seed):
    """A valid share (disjoint, in range) or a ValueError naming what is wrong."""
    tick()
    labels = np.arange(n) % classes
    try:
        idx = split_indices(labels, num_parts, part, scheme, alpha=alpha, seed=seed)
    except ValueError as e:
        msg = str(e)
        assert any(s in msg for s in ("federated.partitioning", "federated.dirichlet_alpha", "Dirichlet(alpha=",
                                      f"part {part} not in", "cannot be split into")), msg
        return
    assert scheme in SCHEMES and 0 <= part < num_parts and n >= 2 * num_parts
    assert scheme == "iid" or (alpha > 0 and math.isfinite(alpha))
    assert len(idx) >= 2 and len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < n


@pytest.mark.regression(reason=(
    "split_indices passes a negative seed to numpy, whose 'expected non-negative integer' names no setting"))
def test_split_indices_negative_seed_is_named():
    tick()
    with pytest.raises(ValueError, match="seed"):
        split_indices(np.arange(20) % 2, 2, 0, "iid", seed=-1)


@FUZZ
@given(weighting=st.one_of(st.sampled_from(WEIGHTINGS), st.text(max_size=12), st.none(), st.integers()))
def test_backbone_fedavg_weighting(weighting):
    tick()
    if weighting in WEIGHTINGS:
        assert BackboneFedAvg(weighting=weighting).weighting == weighting
        return
    with pytest.raises(ValueError, match="federated.weighting") as e:
        BackboneFedAvg(weighting=weighting)
    assert repr(weighting) in str(e.value)


@pytest.mark.regression(reason=(
    "BackboneFedAvg (and Flower's FedAvg) accept any fraction_train: a negative or NaN fraction samples no "
    "institution (or a negative number of them) and > 1 is silently capped; federated.fraction_train "
    "should be checked to lie in (0, 1]"))
@pytest.mark.parametrize("fraction", [-0.5, 0.0, 1.5, float("nan")])
def test_backbone_fedavg_fraction_train(fraction):
    tick()
    with pytest.raises(ValueError, match="fraction_train"):
        BackboneFedAvg(fraction_train=fraction)


@FUZZ
@given(dtype=st.one_of(st.sampled_from(sorted(WIRE_DTYPES)), st.sampled_from(["bfloat16", "float64", "int8", ""]),
                       st.text(max_size=10)),
       seed=st.integers(0, 1000))
def test_transfer_dtype(dtype, seed):
    """A known dtype round-trips the backbone (float16 within its precision); any other is named."""
    tick()
    g = torch.Generator().manual_seed(seed)
    state = {"backbone.w": torch.randn(3, 4, generator=g), "backbone.n": torch.tensor(7)}
    if dtype not in WIRE_DTYPES:
        with pytest.raises(ValueError, match="federated.transfer_dtype") as e:
            to_wire(state, dtype)
        assert repr(dtype) in str(e.value)
        return
    back = from_wire(to_wire(state, dtype))
    assert back["backbone.n"].item() == 7 and back["backbone.w"].dtype == torch.float32
    assert torch.allclose(back["backbone.w"], state["backbone.w"], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- centralized path


def _central(*overrides: str):
    """run_centralized on a config composed with Hydra overrides."""
    return run_centralized(compose_config(TINY.split() + ["training.epochs=1", *overrides]))


_LOADED: dict[str, dict] = {}


def _load_once(dataset_cfg):
    """load_dataset, memoised on the dataset settings (the data of the tiny config are the same
    for every case that changes no dataset setting; those that do are loaded, and checked, anew)."""
    from fed_uml.data import load_dataset

    key = json.dumps(dataset_cfg, sort_keys=True, default=str)
    if key not in _LOADED:
        _LOADED[key] = load_dataset(dataset_cfg)
    return _LOADED[key]


def _central_with(setting: str, value):
    """run_centralized on the composed tiny config with one setting replaced (no Hydra compose
    and no data generation per case: both cost more than the checks under test)."""
    cfg = copy.deepcopy(compose_config(TINY.split() + ["training.epochs=1"]))
    *parents, leaf = setting.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value
    with mock.patch("fed_uml.centralized.load_dataset", _load_once):
        return run_centralized(cfg), cfg


@FEW
@given(setting=st.sampled_from(["method.name", "dataset.name", "model.backbone"]), name=NAME)
def test_unknown_method_dataset_or_backbone_name(setting, name):
    """Centralized run and the server's first step (building the backbone): a ValueError naming
    the setting and the value, before any training."""
    tick()
    known = {"method.name": ["uml", "unimodal", "cdan", "dann", "isca", "mcc", "mdd"],
             "dataset.name": ["synthetic", "eurosat", "eurosat_ms", "bigearthnet", "bigearthnet_v2", "sen12ms"],
             "model.backbone": ["small_cnn", "resnet18"]}
    assume(name not in known[setting])
    with pytest.raises(ValueError) as e:
        _central_with(setting, name)
    # "unknown method 'x' (setting method=...)", "unknown dataset 'x' (setting dataset.name)", ...
    assert repr(name) in str(e.value) and f"setting {setting.split('.')[0]}" in str(e.value), str(e.value)
    if setting == "model.backbone":
        with pytest.raises(ValueError, match="model.backbone"):
            cfg = copy.deepcopy(compose_config(TINY.split()))
            cfg["model"]["backbone"] = name
            initial_backbone(cfg)


# setting -> strategy of values that are out of range; each is validated today, with a message naming it
VALIDATED = {
    "training.epochs": st.integers(-100, -1),
    "training.batch_size": st.integers(-100, 1),
    "calibration.epochs": st.integers(-100, -1),
    "calibration.batch_size": st.integers(-100, 1),
    "dataset.image_size": st.integers(-100, 7),
    "dataset.samples_per_class": st.integers(-100, 0),
    "model.specific_layers": st.one_of(st.integers(-100, 0), st.integers(5, 100)),
}


@FEW
@given(data=st.data())
def test_out_of_range_settings_are_named(data):
    tick()
    setting = data.draw(st.sampled_from(sorted(VALIDATED)))
    value = data.draw(VALIDATED[setting])
    with pytest.raises(ValueError) as e:
        _central_with(setting, value)
    msg = str(e.value)
    leaf = setting.split(".")[-1]
    assert setting in msg or leaf.replace("_", " ") in msg, (setting, value, msg)


UNCHECKED = "{}: not validated before use; the error comes from deep inside {} and does not name the setting"


@pytest.mark.parametrize("setting,value", [
    pytest.param("model.width", 0, marks=pytest.mark.regression(reason=UNCHECKED.format(
        "model.width", "torch.nn.Conv2d (RuntimeError)")), id="width-0"),
    pytest.param("model.width", -3, marks=pytest.mark.regression(reason=UNCHECKED.format(
        "model.width", "torch.nn.Conv2d (RuntimeError)")), id="width-negative"),
    pytest.param("seed", -1, marks=pytest.mark.regression(reason=UNCHECKED.format(
        "seed", "numpy.random.SeedSequence ('expected non-negative integer')")), id="seed-negative"),
    pytest.param("dataset.seed", -1, marks=pytest.mark.regression(reason=UNCHECKED.format(
        "dataset.seed", "numpy.random.SeedSequence")), id="dataset-seed-negative"),
    pytest.param("training.lr", -1, marks=pytest.mark.regression(reason=UNCHECKED.format(
        "training.lr", "torch.optim ('Invalid learning rate')")), id="lr-negative"),
    pytest.param("training.lr", "nan", marks=pytest.mark.regression(reason=UNCHECKED.format(
        "training.lr", "torch.optim")), id="lr-nan"),
    pytest.param("training.lr", 0, marks=pytest.mark.regression(reason=(
        "training.lr=0 is accepted: the run trains nothing and reports chance accuracy")), id="lr-zero"),
    pytest.param("training.lr", "inf", marks=pytest.mark.regression(reason=(
        "training.lr=inf is accepted: the weights become NaN and the run reports garbage")), id="lr-inf"),
    pytest.param("device", "nope", marks=pytest.mark.regression(reason=UNCHECKED.format(
        "device", "torch.device (RuntimeError)")), id="device-unknown"),
    pytest.param("dataset.test_samples_per_class", 0, id="test-samples-zero"),
    pytest.param("dataset.modalities", "[sar,nope]", id="unknown-modality"),
])
def test_bad_setting_is_named(setting, value):
    tick()
    with pytest.raises(ValueError) as e:
        _central(f"{setting}={value}")
    msg = str(e.value)
    leaf = setting.split(".")[-1]
    assert setting in msg or leaf in msg or leaf.replace("_", " ") in msg, msg


# ----------------------------------------------------------------------------- results.json


class Unserialisable:
    pass


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)
POISON = st.sampled_from([Unserialisable(), {1, 2}, 1 + 2j, b"bytes", object(), lambda: 0])


def _with_poison(value, poison, path: list[int]):
    """`value` with `poison` placed somewhere inside it (by the choices in `path`)."""
    if not path:
        return {"payload": value, "bad": poison}
    if isinstance(value, dict) and value:
        key = sorted(value)[path[0] % len(value)]
        return {**value, key: _with_poison(value[key], poison, path[1:])}
    if isinstance(value, list) and value:
        i = path[0] % len(value)
        return value[:i] + [_with_poison(value[i], poison, path[1:])] + value[i + 1:]
    return [value, poison]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "results.json")


@FUZZ
@given(old=JSON_VALUE, new=JSON_VALUE, poison=POISON, where=st.lists(st.integers(0, 10), max_size=4))
def test_failed_results_write_leaves_the_old_file_intact(tmp_path_factory, old, new, poison, where):
    tick()
    folder = tmp_path_factory.mktemp("results")
    path = write_json_atomic(folder / "results.json", {"old": old})
    before = path.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        write_json_atomic(path, _with_poison(new, poison, where))
    assert path.read_bytes() == before and json.loads(before) == {"old": old}
    assert _leftovers(folder) == [], "a temporary file was left behind"


@FUZZ
@given(stage=st.sampled_from(["os.fsync", "os.replace", "os.chmod", "json.dumps", "os.fdopen"]),
       error=st.sampled_from([OSError(28, "No space left on device"), KeyboardInterrupt(), MemoryError()]),
       old=JSON_VALUE)
def test_crash_at_any_stage_of_a_results_write_leaves_the_old_file_intact(tmp_path_factory, stage, error, old):
    tick()
    folder = tmp_path_factory.mktemp("results")
    path = write_json_atomic(folder / "results.json", {"old": old})
    before = path.read_bytes()
    with mock.patch(f"fed_uml.results.{stage}", side_effect=error), pytest.raises(type(error)):
        write_json_atomic(path, {"new": list(range(100))})
    assert path.read_bytes() == before
    assert _leftovers(folder) == []


KILLED_WRITER = """
import os, sys, time
import fed_uml.results
from fed_uml.results import write_json_atomic

def slow_fsync(fd):
    print("writing", flush=True)
    time.sleep(30)

fed_uml.results.os.fsync = slow_fsync
write_json_atomic(sys.argv[1], {"new": [1] * 100000})
"""


def test_killed_writer_leaves_the_old_file_intact(tmp_path):
    """A process SIGKILLed while writing results.json (its temporary file written, not yet
    synced and renamed) leaves the previous results.json byte for byte, and the new text never
    reaches it."""
    tick()
    path = write_json_atomic(tmp_path / "results.json", {"old": list(range(1000))})
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == b"writing"
        time.sleep(0.2)
        assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file is being written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert path.read_bytes() == before
