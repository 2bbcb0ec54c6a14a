"""Files the project reads back never run code: a crafted checkpoint is refused before any of
it is built, and every `torch.load` in the project reads tensors and plain data only."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from fed_uml.centralized import run_centralized
from fed_uml.errors import UserError
from fed_uml.federated.config import compose_config
from fed_uml.training import checkpoint as training_checkpoint
from server import FederationError
from server.checkpoint import FORMAT, FORMAT_VERSION, config_digest, load_checkpoint
from server.rounds import FederatedRun
from tests.conftest import REPO, tiny_config


class _RunsAShellCommand:
    """What an attacker pickles: unpickling it calls os.system (here: creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path, **plain) -> Path:
    torch.save({**plain, "arrays": _RunsAShellCommand(marker), "history": [_RunsAShellCommand(marker)]}, path)
    return path


def test_a_crafted_round_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    cfg = compose_config(["federated.num_rounds=2"])
    marker = tmp_path / "pwned"
    # everything a genuine checkpoint has, with the right digest: only the objects are hostile
    path = _crafted(tmp_path / "checkpoint.pt", marker, format=FORMAT, format_version=FORMAT_VERSION,
                    config_digest=config_digest(cfg), round=1, failures=[], rng=(3, (1,), None))
    with pytest.raises(FederationError, match="refused"):
        load_checkpoint(path, cfg, resume=True)
    assert not marker.exists()
    # the way a user meets it: the ServerApp's run resuming in that folder (it fails before any message)
    with pytest.raises(FederationError, match="refused"):
        FederatedRun(None, {**cfg, "resume": True}, tmp_path).execute()
    assert not marker.exists()


def test_a_crafted_training_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "run"
    folder.mkdir()
    _crafted(folder / "checkpoint.pt", marker, format=training_checkpoint.FORMAT,
             format_version=training_checkpoint.FORMAT_VERSION)
    with pytest.raises(UserError, match="refused"):
        run_centralized({**tiny_config("uml"), "resume": True}, folder)
    assert not marker.exists()


def test_a_checkpoint_written_before_format_versions_says_how_to_proceed(tmp_path):
    cfg = compose_config(["federated.num_rounds=2"])
    old = {"round": 1, "arrays": {"uml": {"w": torch.ones(2)}}, "history": [], "failures": [],
           "rng": (3, (1,), None), "config_digest": config_digest(cfg)}  # what earlier versions wrote
    torch.save(old, tmp_path / "checkpoint.pt")
    with pytest.raises(FederationError, match="earlier version.*resume=false and another results-dir"):
        load_checkpoint(tmp_path / "checkpoint.pt", cfg, resume=True)


def _torch_loads(root: Path):
    for top in ("fed_uml", "server", "clients", "experiments", "localrun", "tests"):
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    name = node.func.attr
                    owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                    if (owner, name) in (("torch", "load"), ("pickle", "load"), ("pickle", "loads")):
                        yield path.relative_to(root), node


def test_every_torch_load_reads_tensors_and_plain_data_only():
    found = list(_torch_loads(REPO))
    assert any(str(p) == "fed_uml/files.py" for p, _ in found), "the scan must see the project's own loader"
    unsafe = []
    for path, node in found:
        weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
        safe = (node.func.attr == "load" and isinstance(weights_only, ast.Constant) and weights_only.value is True)
        if not safe:
            unsafe.append(f"{path}:{node.lineno}")
    assert not unsafe, f"torch.load without weights_only=True (or pickle.load) at {unsafe}"
