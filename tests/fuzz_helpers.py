"""What the fuzz modules share: Hypothesis settings and a count of the cases each test tried,
printed after the module (and merged into `FED_UML_FUZZ_COUNTS=path.json` when set)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("FED_UML_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def fewer(divisor: int) -> settings:
    """FUZZ with 1/divisor of the examples, for cases that cost more."""
    return settings(FUZZ, max_examples=max(1, EXAMPLES // divisor))


class CaseCounter:
    def __init__(self, module: str):
        self.module, self.cases = module, Counter()

    def tick(self) -> None:
        """Count one case for the calling test."""
        self.cases[sys._getframe(1).f_code.co_name] += 1

    def report(self, request) -> None:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.write_line(f"\n{self.module}: fuzz cases tried per test")
                for name, n in sorted(self.cases.items()):
                    reporter.write_line(f"  {name}: {n} case(s)")
        if os.environ.get("FED_UML_FUZZ_COUNTS"):
            path = Path(os.environ["FED_UML_FUZZ_COUNTS"])
            counts = json.loads(path.read_text()) if path.exists() else {}
            counts.update({f"{self.module}::{k}": v for k, v in self.cases.items()})
            path.write_text(json.dumps(counts, indent=1, sort_keys=True))
