"""Files a run writes and later reads back: written atomically, read without ever running code.

Why one place: a checkpoint or a state file lies in a results folder that other people may
be able to write into. `torch.load(..., weights_only=False)` unpickles arbitrary objects, so
a crafted file would run code on the machine that resumes the run. Every file the project
reads back therefore holds only tensors and plain data (str, int, float, bool, None, lists,
tuples, dicts) and is read with `weights_only=True`; it names its format and version, and
the settings it was written with are compared (`settings_digest`) before anything in it is
used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fed_uml.errors import UserError


class FileFormatError(UserError, ValueError):
    """A file cannot be read back: not one of ours, another version, unsafe or for other settings."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def settings_digest(cfg: Mapping[str, Any], free: Iterable[str] = ()) -> str:
    """SHA-256 of the settings (canonical JSON), less the dotted keys in `free`."""
    c = json.loads(json.dumps(cfg, default=str))
    for dotted in free:
        node = c
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()


def save_atomic(payload: Mapping[str, Any], path: str | Path) -> Path:
    """`torch.save` into a temporary file beside `path`, flushed to disk, then renamed over it.

    A crash leaves the previous file or the new one, never half of one.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(payload), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_plain(path: str | Path, fmt: str, version: int, what: str, how_to_proceed: str) -> dict[str, Any]:
    """Read a file written by `save_atomic` with `{"format": fmt, "format_version": version, ...}`.

    Only tensors and plain data are read (`weights_only=True`): a file holding any other object
    is refused before that object is built, so nothing in it runs. A file without a format
    (written by an earlier fed-uml) or of another version is refused with `how_to_proceed`.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileFormatError(path, f"refused: not a readable {what} (it is truncated, not a torch file, or holds "
                                    f"objects other than tensors and plain data, which are never built: {first}); "
                                    f"{how_to_proceed}") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise FileFormatError(path, f"not a {what} of this fed-uml (no format {fmt!r}: written by an earlier "
                                    f"version or by something else); {how_to_proceed}")
    if payload.get("format_version") != version:
        raise FileFormatError(path, f"{what} format version {payload.get('format_version')!r}, this fed-uml reads "
                                    f"version {version}; {how_to_proceed}")
    return payload
