"""The one base class of every error a user can fix: a setting, a file, a folder.

Why a module of its own, at the bottom of the layers: the data readers, the model file,
the settings checks and both Flower apps raise such errors, and every entry point must tell
them from genuine internal failures. An entry point prints a `UserError` as one line
`error: <message>` and exits with status 2 (`experiments.cli`); anything else is a bug and
keeps its traceback. Subclasses keep the builtin class they always had (`ValueError`,
`FileNotFoundError`), so code that catches those still does.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the setting or file and what to change."""


class SettingsError(UserError, ValueError):
    """A setting has a value the run cannot use; the message names the setting."""
