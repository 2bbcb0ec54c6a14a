"""Every setting is checked before any data is read or any step is taken (`fed_uml.preflight`,
`fed_uml.data.memory`), and a user's error ends an entry point as one line `error: ...`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fed_uml.centralized as centralized
import fed_uml.data.memory as memory
import fed_uml.data.synthetic as synthetic
from experiments.cli import run_main
from fed_uml.errors import SettingsError
from fed_uml.federated.config import config_from_run_config
from fed_uml.preflight import check_federated
from tests.conftest import REPO, shared_data_root, tiny_config


@pytest.fixture
def no_data(monkeypatch):
    """Reading or rendering any data fails the test: the checks must come first."""
    def refuse(*a, **k):
        raise AssertionError("data was read before the settings were checked")

    monkeypatch.setattr(centralized, "load_dataset", refuse)


def _with(cfg: dict, dotted: str, value) -> dict:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return cfg


@pytest.mark.parametrize("setting, value", [
    ("calibration.epochs", -1),
    ("calibration.batch_size", 0),
    ("training.epochs", 0),
    ("num_threads", -2),
    ("training.checkpoint_every", -1),
    ("decision.threshold", 1.5),
])
def test_a_bad_setting_is_refused_before_any_data_is_read(no_data, tmp_path, setting, value):
    cfg = _with(tiny_config("uml"), setting, value)
    with pytest.raises(SettingsError, match=setting.replace(".", r"\.")):
        centralized.run_centralized(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists(), "nothing is created for a refused run"


def test_a_results_dir_under_a_file_is_refused_before_any_data_is_read(no_data, tmp_path):
    (tmp_path / "hostname").write_text("x")
    with pytest.raises(SettingsError, match=r"results_dir=.*hostname is a file, not a folder"):
        centralized.run_centralized(tiny_config("uml"), tmp_path / "hostname" / "x")


def test_a_results_dir_that_cannot_be_written_is_refused(no_data, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SettingsError, match="results_dir"):
        centralized.run_centralized(tiny_config("uml"), locked / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_that_is_not_here_is_refused_before_any_data_is_read(no_data, tmp_path):
    with pytest.raises(SettingsError, match="device=cuda: no CUDA device"):
        centralized.run_centralized({**tiny_config("uml"), "device": "cuda"}, tmp_path / "run")


def test_synthetic_data_too_large_for_memory_is_refused_before_rendering(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 2**30)

    def refuse(*a, **k):
        raise AssertionError("rendered before the memory estimate")

    monkeypatch.setattr(synthetic, "generate", refuse)
    cfg = tiny_config("uml", samples_per_class=100000, image_size=32)
    with pytest.raises(SettingsError, match=r"GiB at the peak of loading.*8\.0 GiB available.*"
                                            r"dataset\.samples_per_class"):
        centralized.run_centralized(cfg, tmp_path / "run")


def test_real_data_too_large_for_memory_is_refused_before_reading_pixels(monkeypatch):
    root = shared_data_root()
    if root is None:
        pytest.skip("no shared sample data (FED_UML_DATA)")
    import fed_uml.data.real.assemble as assemble
    from fed_uml.data import load_dataset
    from fed_uml.federated.config import compose_config

    def refuse(*a, **k):
        raise AssertionError("pixels read before the memory estimate")

    monkeypatch.setattr(assemble, "read_modality", refuse)
    monkeypatch.setattr(memory, "available_bytes", lambda: 256 * 2**20)
    cfg = compose_config(["dataset=eurosat_ms", f"dataset.root={root}", "dataset.storage=memory"])
    with pytest.raises(SettingsError, match=r"eurosat_ms.*available; lower dataset\.samples_per_class"):
        load_dataset(cfg["dataset"])
    # what `auto` keeps in memory (modalities under dataset.store.stream_above_mib) is checked too
    with pytest.raises(SettingsError, match=r"eurosat_ms \(.* in memory\).*dataset\.storage=stream"):
        load_dataset({**cfg["dataset"], "storage": "auto"})


@pytest.mark.parametrize("key, value, setting", [
    ("calibration-epochs", -1, "calibration.epochs"),
    ("num-threads", -2, "num_threads"),
    ("local-epochs", 0, "federated.local_epochs"),
    ("num-server-rounds", 0, "federated.num_rounds"),
    ("weighting-mix", 1.5, "federated.weighting_mix"),
    ("weighting-mix", -0.1, "federated.weighting_mix"),
])
def test_the_server_refuses_a_bad_run_config_before_any_message(key, value, setting, tmp_path):
    cfg = config_from_run_config({key: value})
    with pytest.raises(SettingsError, match=setting.replace(".", r"\.")):
        check_federated(cfg, tmp_path)


def test_the_server_refuses_a_results_dir_it_cannot_write(tmp_path):
    (tmp_path / "f").write_text("x")
    cfg = config_from_run_config({})
    with pytest.raises(SettingsError, match="results-dir=.*is a file"):
        check_federated(cfg, tmp_path / "f" / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_an_institution_refuses_a_device_it_does_not_have():
    from clients.handlers import _new_institution

    class Ctx:
        run_config = {"overrides": "device=cuda"}
        node_config = {"partition-id": 0, "num-partitions": 2}

    with pytest.raises(SettingsError, match="device=cuda"):
        _new_institution(Ctx())


# -- how an entry point ends ---------------------------------------------------------------------
def _experiments_run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_users_error_is_one_line_and_status_2(tmp_path):
    done = _experiments_run("calibration.epochs=-1", f"results_dir={tmp_path / 'r'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: calibration.epochs must be an integer >= 1")
    assert "Traceback" not in done.stderr + done.stdout
    debug = _experiments_run("calibration.epochs=-1", f"results_dir={tmp_path / 'r'}", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr + debug.stdout


def test_run_main_prints_a_user_error_as_one_line_and_keeps_tracebacks_of_bugs(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog"])

    def bad_setting():
        raise SettingsError("training.lr must be a finite number > 0, got -1")

    with pytest.raises(SystemExit) as stop:
        run_main(bad_setting)
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: training.lr must be a finite number > 0, got -1\n"

    def bug():
        raise KeyError("internal")

    with pytest.raises(KeyError):  # a genuine internal error keeps its traceback
        run_main(bug)
    monkeypatch.setattr(sys, "argv", ["prog", "--debug"])
    with pytest.raises(SettingsError):  # --debug: the traceback of a user's error too
        run_main(bad_setting)
    assert sys.argv == ["prog"], "--debug is taken out of the arguments the script parses"


@pytest.mark.slow
def test_the_serverapp_stops_a_run_with_a_bad_setting_as_one_line(flower_runtime, tmp_path):
    flower_runtime.start_superlink(simulation=True)
    done = flower_runtime.run({"calibration-epochs": -1, "results-dir": str(tmp_path / "r")}, {"num-supernodes": 2},
                              timeout=300)
    out = done.stdout + done.stderr
    assert "error: calibration.epochs must be an integer >= 1" in out
    assert "Traceback" not in out and "File \"" not in out
    assert not (tmp_path / "r").exists(), "nothing is written for a run refused by its settings"
