"""The package as a cluster or deployment node installs it: a wheel, not the repository.

The wheel is built from a clean copy of the tracked files, installed into a fresh virtual
environment and run from another folder: `fed-uml --help` and every command's `--help`, and a
short centralized run, which must find the settings shipped inside the package without any
environment variable. To stay fast and offline the new environment borrows this environment's
dependencies (a .pth file naming its site-packages) and installs the wheel alone (--no-deps);
the test checks that what runs is the wheel's copy, not the repository's editable install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from experiments.commands import COMMANDS, group_members, is_group

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = ["training.epochs=1", "dataset.samples_per_class=3", "dataset.test_samples_per_class=2",
        "dataset.image_size=16", "model.width=8", "num_threads=1"]


def _tracked_copy(dest: Path) -> Path:
    """The files git tracks (plus untracked, not ignored ones): what a fresh clone holds."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = _tracked_copy(tmp / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp / "dist"), str(source)], check=True)
    (wheel,) = (tmp / "dist").glob("fed_uml-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    new_python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(new_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(new_python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    return env_dir / "bin"


def _run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FED_UML_DATA")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_is_what_runs_and_carries_its_settings(installed, tmp_path):
    code = ("import fed_uml, clients, server, localrun, experiments\n"
            "from fed_uml.federated.config import conf_dir\n"
            "print(*[m.__file__ for m in (fed_uml, clients, server, localrun, experiments)], conf_dir())")
    out = _run([installed / "python", "-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    venv_dir = installed.parent.resolve()
    for path in out.stdout.split():
        assert Path(path).resolve().is_relative_to(venv_dir), f"{path} is not the wheel's copy"
    assert out.stdout.split()[-1].endswith("fed_uml/conf")


def test_fed_uml_help_and_every_commands_help(installed, tmp_path):
    out = _run([installed / "fed-uml", "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(f"\n  {name} " in out.stdout for name in COMMANDS), out.stdout
    commands = [[name] for name, module in COMMANDS.items() if not is_group(module)]
    commands += [[name, sub] for name, module in COMMANDS.items() if is_group(module) for sub in group_members(module)]
    for command in commands:
        out = _run([installed / "fed-uml", *command, "--help"], tmp_path)
        assert out.returncode == 0 and out.stdout.strip(), (command, out.stderr[-2000:])


def test_a_short_centralized_run_from_another_folder(installed, tmp_path):
    out = _run([installed / "fed-uml", "run", *TINY, f"results_dir={tmp_path / 'results'}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert set(results["modalities"]) == {"sar", "rgb"} and results["method"] == "uml"
    assert results["config"]["federated"]["num_rounds"] == 30  # composed from the shipped conf/
    assert {"model-sar.pt", "model-rgb.pt"} <= {p.name for p in (tmp_path / "results").iterdir()}
    same = _run([installed / "python", "-m", "experiments.run", *TINY, f"results_dir={tmp_path / 'again'}"], tmp_path)
    assert same.returncode == 0, same.stderr[-3000:]
