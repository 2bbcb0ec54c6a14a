"""`fed-uml COMMAND ...`: the console script; every command is the `python -m` module of the same job.

`fed-uml run method=uml` is `python -m experiments.run method=uml`: the command runs its module
as `__main__` with the remaining arguments, so each keeps its own options, `--help`, Hydra
overrides and exit status, and the two spellings can never drift apart. A command whose module
is a package takes the name of one of its modules as the next word: `fed-uml bench scale ...` is
`python -m experiments.bench.scale ...`. A command's description is its module's docstring.
Adding a command is one line in `COMMANDS`.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import runpy
import sys
from pathlib import Path

PROG = "fed-uml"
# command -> module run as `python -m`
COMMANDS: dict[str, str] = {
    "run": "experiments.run",
    "predict": "experiments.predict",
    "prepare": "experiments.prepare",
    "sweep": "experiments.sweep",
    "tables": "experiments.tables",
    "regime-map": "experiments.regime_map",
    "positive-control": "experiments.positive_control",
    "data-size": "experiments.data_size",
    "privacy-utility": "experiments.privacy_utility",
    "deploy-local": "experiments.deploy_local",
    "certificates": "localrun.certificates",
    "bench": "experiments.bench",
}
USAGE_STATUS = 2


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"module {module} is not installed")
    return Path(spec.origin)


def description(module: str) -> str:
    """The first sentence of a module's docstring, read without importing it (no torch at `--help`)."""
    doc = ast.get_docstring(ast.parse(_source(module).read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]


def is_group(module: str) -> bool:
    """Whether `module` is a group of commands (a package) rather than one command."""
    return _source(module).name == "__init__.py"


def group_members(package: str) -> dict[str, str]:
    """Name -> module for every module of `package` that runs as a script (has a `__main__` block)."""
    members = {}
    for info in pkgutil.iter_modules([str(_source(package).parent)]):
        module = f"{package}.{info.name}"
        if not info.ispkg and 'if __name__ == "__main__"' in _source(module).read_text(encoding="utf-8"):
            members[info.name.replace("_", "-")] = module
    return members


def usage(commands: dict[str, str], prog: str, intro: str) -> str:
    """The `fed-uml` help text: every command with its one-line description."""
    shown = {name: f"{name} NAME" if is_group(module) else name for name, module in commands.items()}
    width = max(map(len, shown.values())) + 2
    lines = [f"usage: {prog} COMMAND [ARGS...]   ({prog} COMMAND --help: the command's own options)", "", intro, "",
             "commands:"]
    lines += [f"  {shown[name]:<{width}}{description(module)}" for name, module in commands.items()]
    return "\n".join(lines)


def resolve(argv: list[str], commands: dict[str, str] = COMMANDS, prog: str = PROG,
            intro: str = "Federated Unpaired Multimodal Learning for satellite sensors, on Flower.",
            ) -> tuple[str, list[str]]:
    """(module to run, its arguments) for a command line.

    SystemExit with the list of commands for `--help`, no command or an unknown one.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(commands, prog, intro))
        raise SystemExit(0 if argv else USAGE_STATUS)
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"{prog}: unknown command {name!r}; commands: {', '.join(commands)}", file=sys.stderr)
        raise SystemExit(USAGE_STATUS)
    module = commands[name]
    if is_group(module):
        return resolve(rest, group_members(module), f"{prog} {name}", description(module))
    return module, rest


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names as `python -m` would run its module."""
    module, args = resolve(list(sys.argv[1:] if argv is None else argv))
    sys.argv = [module, *args]  # as `python -m` sees them (runpy puts the module's file first)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
