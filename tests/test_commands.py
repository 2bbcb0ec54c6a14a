"""The `fed-uml` console script: every command is the `python -m` module of its job, and the
one table of commands is what `--help` lists and what runs. Fast: `--help` reads docstrings
without importing the modules, and the command that runs here (`certificates`) needs no torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from experiments.commands import COMMANDS, USAGE_STATUS, group_members, is_group, main, resolve


def test_every_command_is_a_module_that_runs_as_a_script():
    assert {"run", "predict", "bench"} <= set(COMMANDS)
    modules = [m for m in COMMANDS.values() if not is_group(m)]
    modules += [sub for m in COMMANDS.values() if is_group(m) for sub in group_members(m).values()]
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, module
        assert 'if __name__ == "__main__"' in Path(spec.origin).read_text(), f"{module} would do nothing"


def test_a_command_line_resolves_to_its_module_and_arguments():
    assert resolve(["run", "method=unimodal", "seed=1"]) == ("experiments.run", ["method=unimodal", "seed=1"])
    assert resolve(["bench", "scale", "--institutions", "8"]) == ("experiments.bench.scale", ["--institutions", "8"])
    assert resolve(["bench", "training-throughput"]) == ("experiments.bench.training_throughput", [])


def test_help_lists_every_command_and_a_groups_members(capsys):
    with pytest.raises(SystemExit) as stop:
        resolve(["--help"])
    assert stop.value.code == 0
    listed = capsys.readouterr().out
    for name in COMMANDS:
        assert f"\n  {name} " in listed, name
    assert "Centralized runner" in listed  # a command's description is its module's docstring
    with pytest.raises(SystemExit):
        resolve(["bench", "--help"])
    assert "\n  scale " in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["no-such-command"], ["bench", "no-such-benchmark"]])
def test_no_or_an_unknown_command_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        resolve(argv)
    assert stop.value.code == USAGE_STATUS
    if argv:
        assert "unknown command" in capsys.readouterr().err


def test_a_command_runs_its_module_with_the_arguments(tmp_path):
    main(["certificates", str(tmp_path), "--host", "10.0.0.5", "--supernode", "sar-0"])
    assert {"ca.crt", "server.crt", "server.key", "sar-0", "sar-0.pub"} <= {p.name for p in tmp_path.iterdir()}
