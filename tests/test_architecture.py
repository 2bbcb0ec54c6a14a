"""The layering rule of the code base (docs/explanation/architecture.md), checked on the source itself.

Every import statement of the project's packages, including imports inside functions
(a lazy import is still a dependency), is read with `ast`; `if TYPE_CHECKING:` blocks are
ignored. Three rules:

1. no import cycle among the modules of `fed_uml`;
2. a module imports only its own unit or units of a LOWER layer (`LAYERS`): fed_uml never
   imports the apps, the runtime helpers or the experiments, and the two Flower apps never
   import each other (they meet only through messages);
3. nothing the ServerApp imports, directly or through other modules, reaches the data
   readers (`fed_uml.data`) or the institution's client-side work.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# unit -> layer; a unit is a module or package, matched by the longest dotted prefix (the
# package root "fed_uml" only as itself: a new subpackage must be given its own layer).
LAYERS = {
    "fed_uml": 1,  # the package root (__version__)
    "fed_uml.errors": 0,  # UserError: what entry points print as one line
    "fed_uml.schema": 1,  # every setting declared once: typed dataclasses, Hydra's schema of conf/
    "fed_uml.files": 1,  # files read back without running code (weights_only), written atomically
    "fed_uml.modality": 1,
    "fed_uml.results": 1,
    "fed_uml.data": 2,
    "fed_uml.models": 2,
    "fed_uml.metrics": 2,  # the task's metrics (mAP, F1, accuracy); names are fed_uml.results'
    "fed_uml.privacy": 2,  # secure-aggregation and DP settings, clipping, noise, the accountant
    "fed_uml.training": 3,
    "fed_uml.calibration": 3,
    "fed_uml.preflight": 4,  # every setting checked before any work (no data: the ServerApp uses it)
    "fed_uml.model_file": 4,
    "fed_uml.methods": 5,
    "fed_uml.predict": 5,
    "fed_uml.centralized": 6,
    "fed_uml.federated": 6,
    "clients": 7,
    "server": 7,
    "localrun": 8,
    "experiments": 9,
}
SERVER_MUST_NOT_REACH = ("fed_uml.data", "fed_uml.federated.institution")
PROJECT_PACKAGES = sorted({u.split(".")[0] for u in LAYERS})


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS and (prefix != "fed_uml" or module == "fed_uml"):
            return prefix
    return None


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every project package found under `root`."""
    out = {}
    for top in PROJECT_PACKAGES:
        base = root / top
        if not base.is_dir():
            continue
        for path in base.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """Project modules `module` imports (`from a.b import c` names a.b.c when that is a module)."""
    is_package = False
    tree = ast.parse(source)
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_package else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    found.add(name if name in known else base)
            visit(child)

    visit(tree)
    return {m for m in found if m.split(".")[0] in PROJECT_PACKAGES and m != module}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    graph = {}
    for module, path in files.items():
        deps = imports_of(module, path.read_text(), known)
        # `import a.b.c` also imports the packages a and a.b; count the deepest known module
        graph[module] = {_deepest_known(d, known) for d in deps} - {None, module}
    return graph


def _deepest_known(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = dfs(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, deps in sorted(graph.items()):
        unit = unit_of(module)
        if unit is None:
            bad.append(f"{module}: not in any unit of LAYERS (give its package a layer in tests/test_architecture.py)")
            continue
        for dep in sorted(deps):
            dep_unit = unit_of(dep)
            if dep_unit is None:
                bad.append(f"{module} imports {dep}, which is not in any unit of LAYERS")
                continue
            if dep_unit == unit:
                continue
            if LAYERS[dep_unit] >= LAYERS[unit]:
                bad.append(f"{module} (layer {LAYERS[unit]}) imports {dep} (layer {LAYERS[dep_unit]})")
    return bad


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for dep in graph.get(node, ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parts = dep.split(".")
                todo.extend(".".join(parts[:n]) for n in range(1, len(parts)) if ".".join(parts[:n]) in graph)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_is_read(graph):
    # the checker must see the real code: the apps and the library are there, with edges
    assert "fed_uml.calibration" in graph and "server.server_app" in graph and "clients.client_app" in graph
    assert "fed_uml.models.uml" in graph["fed_uml.calibration"]


def test_no_import_cycle_in_fed_uml(graph):
    lib = {m: {d for d in deps if d.startswith("fed_uml")} for m, deps in graph.items() if m.startswith("fed_uml")}
    assert find_cycle(lib) is None, f"import cycle: {' -> '.join(find_cycle(lib))}"


def test_every_import_points_down_the_layers(graph):
    assert layer_violations(graph) == []


def test_the_server_never_reaches_data_readers(graph):
    for app in [m for m in graph if m == "server" or m.startswith("server.")]:
        bad = sorted(m for m in reachable(graph, app) if m.startswith(SERVER_MUST_NOT_REACH))
        assert not bad, f"{app} reaches {bad}"


# --- the checker itself catches what it is for ------------------------------------------


def test_checker_finds_a_cycle_and_an_upward_import():
    graph = {"fed_uml.methods.uml": {"fed_uml.methods.registry"},
             "fed_uml.methods.registry": {"fed_uml.methods.uml"},
             "fed_uml.data.catalog": {"fed_uml.methods.registry"},
             "fed_uml.models.uml": {"server.rounds"}}
    assert find_cycle(graph) in (["fed_uml.methods.registry", "fed_uml.methods.uml", "fed_uml.methods.registry"],
                                 ["fed_uml.methods.uml", "fed_uml.methods.registry", "fed_uml.methods.uml"])
    bad = layer_violations(graph)
    assert any("fed_uml.data.catalog" in b for b in bad) and any("server.rounds" in b for b in bad)


def test_lazy_and_relative_imports_count(tmp_path):
    pkg = tmp_path / "fed_uml" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "fed_uml" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "catalog.py").write_text("def f():\n    from fed_uml.methods import registry\n")
    (pkg / "raster.py").write_text("from .catalog import f\n")
    (tmp_path / "fed_uml" / "methods").mkdir()
    (tmp_path / "fed_uml" / "methods" / "__init__.py").write_text("")
    (tmp_path / "fed_uml" / "methods" / "registry.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fed_uml.data import raster\n")
    g = import_graph(tmp_path)
    assert g["fed_uml.data.catalog"] == {"fed_uml.methods.registry"}
    assert g["fed_uml.data.raster"] == {"fed_uml.data.catalog"}
    assert g["fed_uml.methods.registry"] == set()
    assert layer_violations(g) == ["fed_uml.data.catalog (layer 2) imports fed_uml.methods.registry (layer 5)"]
