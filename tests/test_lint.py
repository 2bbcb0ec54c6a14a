"""Lint and types as CI checks them: ruff (with the docstring rules) and mypy over fed_uml/.

Both read their settings from pyproject.toml (`[tool.ruff]`, `[tool.mypy]`), so this file and a
developer's `ruff check .` / `mypy` run the same checks. Each failure prints the tool's findings.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_ruff_passes_with_the_docstring_rules():
    proc = _run("ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, f"ruff check . found problems:\n{proc.stdout}{proc.stderr}"


def test_mypy_passes_on_fed_uml():
    # mypy's own cache (.mypy_cache, keyed by each file's hash): about 40 s on 2 CPU cores when it is
    # empty (a fresh clone), about 1 s after
    proc = _run("mypy")
    assert proc.returncode == 0, f"mypy found problems:\n{proc.stdout}{proc.stderr}"
