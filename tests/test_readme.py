"""README.md against the code: its Markdown renders as meant and what it names exists.

Fast (nothing trains, nothing starts): every ``` fence pairs up and no section renders as
code; every `python -m MODULE` in it is importable and runnable; every repository path and
dotted project name it quotes exists; the run-config table holds exactly the keys of
pyproject.toml's `[tool.flwr.app.config]`, and every `--run-config` it shows uses known keys;
the `python -m experiments.run` commands compose with Hydra; the "Code layout" block lists
every module and package of fed_uml/, clients/, server/, localrun/ and experiments/.

`python tests/test_readme.py` prints the fences per section and any section that renders as code.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROJECT = ("fed_uml", "clients", "server", "localrun", "experiments", "tests", "conf", "docs", ".ci")
FENCE = re.compile(r"^\s*```")


def _text() -> str:
    return README.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- Markdown structure


def sections(text: str) -> list[dict]:
    """The README cut at its headings (outside code): title, fence count, and the problems found.

    A problem is a fence that does not start its line (e.g. `REAL_```bash`), a heading-like
    line (`## ...`) inside a code block (a fence went missing above it), or a section that
    ends inside a code block.
    """
    out = [{"title": "(top)", "line": 1, "fences": 0, "problems": []}]
    in_code = False
    for n, line in enumerate(text.splitlines(), start=1):
        sec = out[-1]
        if "```" in line and not FENCE.match(line):
            sec["problems"].append(f"line {n}: a fence that does not start its line: {line.strip()!r}")
        if FENCE.match(line):
            sec["fences"] += 1
            in_code = not in_code
            continue
        if in_code:
            if re.match(r"^#{2,6} \S", line):
                sec["problems"].append(f"line {n}: a heading inside a code block: {line.strip()!r}")
            continue
        if re.match(r"^#{1,6} \S", line):
            out.append({"title": line.strip(), "line": n, "fences": 0, "problems": []})
    for sec in out:
        if sec["fences"] % 2:
            sec["problems"].append(f"an odd number of fences ({sec['fences']}): the rest renders as code")
    if in_code:
        out[-1]["problems"].append("the file ends inside a code block")
    return out


def test_fences_pair_up_and_no_section_renders_as_code():
    problems = [f"{s['title']} (line {s['line']}): {p}" for s in sections(_text()) for p in s["problems"]]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_broken_fence():
    broken = "## A\n\n```bash\nx\n```\n\n#### Real\n\nREAL_```bash\ny\n```\n\n## B\n"
    found = [p for s in sections(broken) for p in s["problems"]]
    assert any("does not start its line" in p for p in found)
    assert any("heading inside a code block" in p or "odd number" in p for p in found)
    assert not [p for s in sections("## A\n```bash\n# a comment\n```\n## B\n") for p in s["problems"]]


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks and of the indented (4-space) command lines."""
    blocks, current, in_code = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            if in_code:
                blocks.append("\n".join(current))
                current = []
            in_code = not in_code
        elif in_code:
            current.append(line)
        elif line.startswith("    ") and "python" in line:
            blocks.append(line.strip())
    return blocks


def prose(text: str) -> str:
    """The README without its fenced code blocks."""
    return re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.S | re.M)


def commands(text: str) -> list[str]:
    """Shell commands of the code blocks, continuation lines (`\\`) joined, comments dropped."""
    out = []
    for block in code_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" # ")[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                out.append(line)
    return out


# ----------------------------------------------------------------------------- scripts and names


def python_modules(text: str) -> set[str]:
    return set(re.findall(r"python[0-9.]* -m ([A-Za-z_][\w.]*\w)(?![\w.<])", text))  # not a placeholder


def test_every_python_m_module_exists_and_runs_as_a_script():
    modules = python_modules(_text())
    assert {"experiments.run", "experiments.tables", "localrun.certificates"} <= modules
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"README runs `python -m {name}`, which does not exist"
        if name.split(".")[0] in PROJECT:
            assert spec.origin and spec.origin.endswith(".py"), name
            source = Path(spec.origin).read_text()
            assert 'if __name__ == "__main__"' in source, f"`python -m {name}` would do nothing: no __main__ block"


def repo_paths(text: str) -> set[str]:
    """Repository paths the README names: in inline code, in links, and in commands."""
    found = set()
    tops = "|".join(map(re.escape, PROJECT))
    pattern = re.compile(rf"(?<![\w./-])((?:{tops})/[\w./-]*)")
    for span in re.findall(r"`([^`]+)`", prose(text)):
        found.update(m for m in pattern.findall(span))
    found.update(p for p in re.findall(r"\]\(([^)#\s]+)\)", text) if not p.startswith(("http:", "https:")))
    for cmd in commands(text):
        found.update(pattern.findall(cmd))
    # placeholders (<name>, {a,b}, *) are not paths; trailing punctuation is not part of one
    return {p.rstrip(".,:;") for p in found if not re.search(r"[<>{}*]", p)}


def test_every_repository_path_exists():
    paths = repo_paths(_text())
    assert {"experiments/bench/gpu_simulation.sh", "docs/regime_map.png", ".ci/run"} <= paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README names paths that do not exist: {missing}"


def dotted_names(text: str) -> set[str]:
    tops = "|".join(p for p in PROJECT if p not in ("tests", "conf", "docs", ".ci"))
    return {m for span in re.findall(r"`([^`]+)`", prose(text))
            for m in re.findall(rf"(?<![\w/.-])((?:{tops})(?:\.\w+)+)", span)}


def _resolve(name: str):
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        module = ".".join(parts[:n])
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            if n == len(parts):
                return spec  # a module: found, not imported
            obj = importlib.import_module(module)
            for attr in parts[n:]:
                obj = getattr(obj, attr)
            return obj
    raise ModuleNotFoundError(name)


def test_every_dotted_project_name_exists():
    names = dotted_names(_text())
    assert "fed_uml.models.shared_state_keys" in names
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name} ({e})")
    assert not missing, f"README names what does not exist: {missing}"


# ----------------------------------------------------------------------------- code layout

LAYOUT_PACKAGES = ("fed_uml", "clients", "server", "localrun", "experiments")


def layout_listing(text: str) -> set[str]:
    """The paths the "Code layout" block lists. A line is `NAMES  description`: NAMES (up to the
    first two spaces) is one name or several separated by ", ", a folder ends in "/", and
    indentation (two spaces a level) puts a name inside the folder above it."""
    body = text[text.index("## Code layout"):]
    block = body.split("```", 2)[1]
    listed, parents = set(), []
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        parents = parents[:depth]
        for name in names.split(", "):
            listed.add("/".join([*parents, name.rstrip("/")]))
        if names.endswith("/"):
            parents.append(names.rstrip("/"))
    return listed


def existing_layout(root: Path = ROOT) -> set[str]:
    """Every module, script and package of the project's packages (`__init__.py` is its package)."""
    found = {top for top in LAYOUT_PACKAGES if (root / top).is_dir()}
    for top in LAYOUT_PACKAGES:
        for path in (root / top).rglob("*"):
            rel = path.relative_to(root)
            if "__pycache__" in rel.parts:
                continue
            if path.is_dir() and (path / "__init__.py").exists():
                found.add(rel.as_posix())
            elif path.suffix in (".py", ".sh") and path.name != "__init__.py":
                found.add(rel.as_posix())
    return found


def test_code_layout_lists_every_module_and_package():
    listed, existing = layout_listing(_text()), existing_layout()
    assert "fed_uml/methods/isca.py" in listed and "localrun/flower.py" in listed
    ours = {p for p in listed if p.split("/")[0] in LAYOUT_PACKAGES}
    assert not existing - ours, f"modules missing from README's code layout: {sorted(existing - ours)}"
    gone = sorted(ours - existing) + sorted(p for p in listed - ours if not (ROOT / p).exists())
    assert not gone, f"README's code layout lists what does not exist: {gone}"


# ----------------------------------------------------------------------------- run config


def pyproject_run_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def run_config_table(text: str) -> set[str]:
    """The keys (first column) of the run-config table in "Federated runs"."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\|\s*key\s*\|\s*Hydra setting", line))
    keys = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def test_run_config_table_matches_pyproject():
    table, config = run_config_table(_text()), set(pyproject_run_config())
    assert not config - table, f"run-config keys missing from the README table: {sorted(config - table)}"
    assert not table - config, f"README table keys that are not run-config keys: {sorted(table - config)}"


def test_run_config_of_every_command_uses_known_keys():
    config = set(pyproject_run_config())
    used = set()
    for cmd in commands(_text()) + re.findall(r"`([^`]*--run-config[^`]*)`", prose(_text())):
        for value in re.findall(r"--run-config\s+\"([^\"]*)\"", cmd):
            used.update(token.split("=", 1)[0] for token in shlex.split(value))
    assert used, "no --run-config found in the README"
    assert not used - config, f"README passes unknown run-config keys: {sorted(used - config)}"


def test_centralized_commands_compose():
    """Every `python -m experiments.run ...` override in the README composes (no run)."""
    from fed_uml.federated.config import compose_config

    runs = [cmd.split("python -m experiments.run", 1)[1] for cmd in commands(_text())
            if "python -m experiments.run " in cmd]
    assert len(runs) >= 10
    for args in runs:
        overrides = [o for o in shlex.split(args) if "=" in o]
        try:
            compose_config(overrides)
        except Exception as e:  # noqa: BLE001  (report which command)
            pytest.fail(f"`python -m experiments.run{args}` does not compose: {e}")


if __name__ == "__main__":
    for sec in sections(_text()):
        flag = "  <-- " + "; ".join(sec["problems"]) if sec["problems"] else ""
        print(f"{sec['line']:>5}  fences {sec['fences']:>2}  {sec['title']}{flag}")
    sys.exit(1 if any(s["problems"] for s in sections(_text())) else 0)
