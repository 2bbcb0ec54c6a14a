"""How every entry point ends on a user's error: one line `error: <message>`, exit status 2.

A `fed_uml.errors.UserError` (a bad setting, a missing or bad file) is the user's to fix and
its message says how; a traceback would only bury that line. Anything else is a bug in
fed-uml and keeps its full traceback. `--debug` (or `FED_UML_DEBUG=1`) shows the traceback
of a user error too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from fed_uml.errors import UserError

USER_ERROR_STATUS = 2
T = TypeVar("T")


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether `--debug` is among the arguments (it is then removed from them) or FED_UML_DEBUG is set."""
    args = sys.argv if argv is None else argv
    found = "--debug" in args
    while "--debug" in args:
        args.remove("--debug")
    return found or os.environ.get("FED_UML_DEBUG", "") not in ("", "0")


def report_user_errors(fn: Callable[[], T], debug: bool = False) -> T:
    """Run `fn`; a `UserError` becomes `error: <message>` on stderr and SystemExit(2)."""
    try:
        return fn()
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS) from None


def run_main(main: Callable[[], object]) -> None:
    """The `if __name__ == "__main__"` of an argparse entry point.

    `--debug` is taken out of the arguments, a user's error ends as one line and status 2, an int
    returned is the exit status.
    """
    debug = debug_requested()
    result = report_user_errors(main, debug)
    raise SystemExit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
