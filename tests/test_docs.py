"""The documentation against the code: README.md and every page of the site (docs/) render as
meant, and what they name exists.

Fast (nothing trains, nothing starts): every ``` fence pairs up and no section renders as
code; every `python -m MODULE` they show is importable and runnable; every repository path,
link and dotted project name they quote exists; every page is in the site's navigation; the
run-config reference holds exactly the keys of pyproject.toml's `[tool.flwr.app.config]`, and
every `--run-config` shown uses known keys; the `python -m experiments.run` commands compose
with Hydra; the code layout (explanation/architecture.md) lists every module and package of
fed_uml/, clients/, server/, localrun/ and experiments/; the generated settings and
command-line references cover every setting of the schema (fed_uml/schema/, conf/dataset/) and every
`fed-uml` command.
`mkdocs build --strict` (in .ci/run) checks the links between pages and their anchors.

`python tests/test_docs.py` prints the fences per section of every page and any section that
renders as code.
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
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)
DOCUMENTS = [README, *PAGES]
ARCHITECTURE = DOCS / "explanation" / "architecture.md"
RUN_CONFIG = DOCS / "reference" / "run-config.md"
PROJECT = ("fed_uml", "clients", "server", "localrun", "experiments", "tests", "conf", "docs", ".ci")
FENCE = re.compile(r"^\s*```")


def _text(path: Path = README) -> str:
    return path.read_text(encoding="utf-8")


def _all_text() -> str:
    return "\n\n".join(_text(p) for p in DOCUMENTS)


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ----------------------------------------------------------------------------- Markdown structure


def sections(text: str) -> list[dict]:
    """A page cut at its headings (outside code): title, fence count, and the problems found.

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


@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_fences_pair_up_and_no_section_renders_as_code(path):
    problems = [f"{s['title']} (line {s['line']}): {p}" for s in sections(_text(path)) for p in s["problems"]]
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
    """A page without its fenced code blocks."""
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
    modules = python_modules(_all_text())
    assert {"experiments.run", "experiments.tables", "localrun.certificates"} <= modules
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"the docs run `python -m {name}`, which does not exist"
        if name.split(".")[0] in PROJECT:
            assert spec.origin and spec.origin.endswith(".py"), name
            source = Path(spec.origin).read_text()
            assert 'if __name__ == "__main__"' in source, f"`python -m {name}` would do nothing: no __main__ block"


def repo_paths(text: str, page_dir: Path = ROOT) -> set[str]:
    """Repository paths a page names, relative to the repository: in inline code and in
    commands (written from the repository's root), and in links (relative to the page)."""
    found = set()
    tops = "|".join(map(re.escape, PROJECT))
    pattern = re.compile(rf"(?<![\w./-])((?:{tops})/[\w./-]*)")
    for span in re.findall(r"`([^`]+)`", prose(text)):
        found.update(m for m in pattern.findall(span))
    for cmd in commands(text):
        found.update(pattern.findall(cmd))
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", prose(text)):
        if not link.startswith(("http:", "https:", "mailto:")):
            target = (page_dir / link).resolve()
            found.add(target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target))
    # placeholders (<name>, {a,b}, *) are not paths; trailing punctuation is not part of one
    return {p.rstrip(".,:;") for p in found if not re.search(r"[<>{}*]", p)}


def test_every_repository_path_and_link_exists():
    paths = {path: repo_paths(_text(path), path.parent) for path in DOCUMENTS}
    assert {"experiments/bench/gpu_simulation.sh", "docs/regime_map.png", ".ci/run"} <= set().union(*paths.values())
    missing = sorted(f"{_name(page)}: {p}" for page, found in paths.items() for p in found if not (ROOT / p).exists())
    assert not missing, f"the docs name paths that do not exist: {missing}"


# ----------------------------------------------------------------------------- the README, a front door

README_COMMANDS = (
    "python3.11 -m venv .venv && .venv/bin/pip install -e '.[test]' && . .venv/bin/activate && "
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 flwr run . --stream --federation-config \"num-supernodes=4\"",
    "python3.11 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
)


def test_readme_opens_with_the_two_commands_and_stays_short():
    lines = _text().splitlines()
    assert len(lines) <= 150, f"README has {len(lines)} lines: move detail into docs/"
    first_block = code_blocks(_text())[0]
    assert _text().index("```") < _text().index("\n## "), "the two commands must come first"
    assert [line for line in first_block.splitlines() if not line.startswith("#")] == list(README_COMMANDS)


def test_every_page_the_readme_links_exists_and_is_on_the_site():
    linked = {p for p in repo_paths(_text()) if p.startswith("docs/") and p.endswith(".md")}
    assert {"docs/tutorials/first-federated-run.md", "docs/results.md"} <= linked
    assert not [p for p in linked if not (ROOT / p).is_file()]
    assert not linked - {_name(p) for p in PAGES}


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return [p for item in node for p in _nav_pages(item)]


def test_every_page_is_in_the_navigation_once():
    import yaml

    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert len(nav) == len(set(nav)), "a page is in the navigation twice"
    assert set(nav) == {p.relative_to(DOCS).as_posix() for p in PAGES}


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
    names = dotted_names(_all_text())
    assert "fed_uml.models.shared_state_keys" in names
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name} ({e})")
    assert not missing, f"the docs name what does not exist: {missing}"


# ----------------------------------------------------------------------------- code layout

LAYOUT_PACKAGES = ("fed_uml", "clients", "server", "localrun", "experiments")


def layout_listing(text: str) -> set[str]:
    """The paths the "Code layout" block of a page lists. A line is `NAMES  description`: NAMES (up to the
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
    listed, existing = layout_listing(_text(ARCHITECTURE)), existing_layout()
    assert "fed_uml/methods/isca.py" in listed and "localrun/flower.py" in listed
    ours = {p for p in listed if p.split("/")[0] in LAYOUT_PACKAGES}
    assert not existing - ours, f"modules missing from the code layout: {sorted(existing - ours)}"
    gone = sorted(ours - existing) + sorted(p for p in listed - ours if not (ROOT / p).exists())
    assert not gone, f"the code layout lists what does not exist: {gone}"


# ----------------------------------------------------------------------------- run config


def pyproject_run_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def run_config_table(text: str) -> set[str]:
    """The keys (first column) of the run-config table of a page."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\|\s*key\s*\|\s*Hydra setting", line))
    keys = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def test_run_config_table_matches_pyproject():
    """The run-config reference is generated from the schema: its keys are pyproject.toml's."""
    table, config = run_config_table(_generator().run_config_markdown()), set(pyproject_run_config())
    assert not config - table, f"run-config keys missing from the reference: {sorted(config - table)}"
    assert not table - config, f"reference keys that are not run-config keys: {sorted(table - config)}"
    assert "<!-- generated: run-config -->" in _text(RUN_CONFIG)


def test_run_config_of_every_command_uses_known_keys():
    config = set(pyproject_run_config())
    used = set()
    for cmd in commands(_all_text()) + re.findall(r"`([^`]*--run-config[^`]*)`", prose(_all_text())):
        for value in re.findall(r"--run-config\s+\"([^\"]*)\"", cmd):
            used.update(token.split("=", 1)[0] for token in shlex.split(value))
    assert used, "no --run-config found in the docs"
    assert not used - config, f"the docs pass unknown run-config keys: {sorted(used - config)}"


@pytest.mark.slow
def test_centralized_commands_compose():
    """Every `python -m experiments.run ...` override in the docs composes (no run)."""
    from fed_uml.federated.config import compose_config

    runs = [cmd.split("python -m experiments.run", 1)[1] for cmd in commands(_all_text())
            if "python -m experiments.run " in cmd]
    assert len(runs) >= 10
    for args in runs:
        overrides = [o for o in shlex.split(args) if "=" in o]
        try:
            compose_config(overrides)
        except Exception as e:  # noqa: BLE001  (report which command)
            pytest.fail(f"`python -m experiments.run{args}` does not compose: {e}")


# ----------------------------------------------------------------------------- generated references


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generated", DOCS / "hooks" / "generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaves(node, prefix=""):
    """Dotted keys of a YAML tree's leaves (a flow mapping written on one line counts as one)."""
    if isinstance(node, dict) and node:
        return {k for key, value in node.items() for k in _leaves(value, f"{prefix}{key}.")}
    return {prefix.rstrip(".")}


def test_settings_reference_is_the_schema():
    """Every setting of the schema (the top level, every method, backbone and kind of data set)
    has its row in the generated reference, with its type and default; every value a data
    set's yaml file sets has its row too."""
    import yaml

    from fed_uml.schema import DATASETS, METHODS, MODELS, DatasetSettings, Settings
    from fed_uml.schema.reference import declared

    generator = _generator()
    page = generator.settings_markdown()
    schemas = [(Settings, ""), (DatasetSettings, "dataset.")] + [
        (schema, f"{group}.") for group, table in (("method", METHODS), ("model", MODELS), ("dataset", DATASETS))
        for schema in table.values()]
    for schema, prefix in schemas:
        for setting in declared(schema, prefix):
            if not setting.is_group:
                assert generator.setting_row(setting) in page, setting.path
    for row in ("| `federated.dp_delta` | float | `1e-05` |", "| `federated.state_dir` | str \\| null | `null` |",
                "| `federated.secure_num_shares` | int \\| float | `1.0` |", "| `dataset.sensors.sar` |",
                "| `dataset.modalities` | list[str] | `(per choice)` |", "| `method.trade_off` | float | `1.0` |"):
        assert row in page, row
    for path in sorted((ROOT / "conf").glob("dataset/*.yaml")):
        _, rows = generator.yaml_settings(path.read_text())
        tree = yaml.safe_load(path.read_text())
        flow = {key for key, value, _ in rows if value.startswith("{")}  # a mapping on one line: one row
        leaves = {k for k in _leaves(tree) if not any(k.startswith(f + ".") for f in flow)} | flow
        assert {key for key, _, _ in rows} == leaves, path
        assert all(f"| `dataset.{key}` | `" in page for key in leaves), path
    assert "Hydra setting" not in page and "`hydra." not in page
    assert "<!-- generated: settings -->" in _text(DOCS / "reference" / "settings.md")


def test_command_line_reference_lists_every_command():
    from experiments.commands import COMMANDS, group_members, is_group

    page = _generator().commands_markdown()
    for name, module in COMMANDS.items():
        subs = group_members(module) if is_group(module) else {"": module}
        for sub, target in subs.items():
            assert f"| `{' '.join(filter(None, ['fed-uml', name, sub]))}` | `python -m {target}` |" in page
    assert "<!-- generated: commands -->" in _text(DOCS / "reference" / "cli.md")


# ----------------------------------------------------------------------------- words for users

PROCESS_WORDS = re.compile(r"\b(this round|the issue|sessions?|issue #?\d+|before this change)\b", re.I)


@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_no_word_of_the_projects_process_in_user_docs(path):
    found = [f"line {n}: {line.strip()}" for n, line in enumerate(_text(path).splitlines(), 1)
             if PROCESS_WORDS.search(line)]
    assert not found, "\n".join(found)


if __name__ == "__main__":
    bad = False
    for page in DOCUMENTS:
        print(_name(page))
        for sec in sections(_text(page)):
            flag = "  <-- " + "; ".join(sec["problems"]) if sec["problems"] else ""
            bad = bad or bool(sec["problems"])
            print(f"{sec['line']:>5}  fences {sec['fences']:>2}  {sec['title']}{flag}")
    sys.exit(1 if bad else 0)


def test_the_docs_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, or a page left out of the navigation, fails."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file()
