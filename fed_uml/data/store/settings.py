"""Reading the store settings of the `dataset` config group.

Where stores live, which path a run takes (`dataset.storage`), how a store is written and when it is
rebuilt.

Why a module of its own: the real-data assembly (`fed_uml.data.real.assemble`), the prepare
step and the entry points all read these settings the same way and refuse a bad one before any
file is touched, naming the setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fed_uml.errors import SettingsError

STORAGE_MODES = ("auto", "memory", "stream")
DTYPES = ("compact", "float32")
REBUILD = ("auto", "always", "never")
VERIFY = ("changed", "always")
# Where stores live when dataset.store.dir is unset: $FED_UML_STORE, else the user's cache.
STORE_ENV = "FED_UML_STORE"


def default_store_dir() -> Path:
    """$FED_UML_STORE, else $XDG_CACHE_HOME/fed-uml/store (~/.cache/fed-uml/store)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fed-uml" / "store"


@dataclass(frozen=True)
class StoreSettings:
    """`dataset.storage` and `dataset.store.*` (conf/dataset/<real data set>.yaml documents each).

    storage: `memory` reads the chosen patches into tensors (the small-data path); `stream`
        reads them batch by batch from the prepared store; `auto` streams a modality whose
        chosen patches would take more than `stream_above_mib` MiB as float32 tensors.
    dtype: `compact` stores integer digital numbers as uint16/uint8 and dB as float16;
        `float32` stores exactly what the readers return (the in-memory path's values).
    rebuild: `auto` resumes an interrupted store, re-prepares corrupt blocks and rebuilds a
        store of an older format; `always` prepares anew; `never` refuses anything but a complete,
        current store (a deployment that must not decode).
    verify: `changed` checks the block checksums when the file changed since it was written;
        `always` on every open.
    """

    mode: str = "auto"
    dir: Path | None = None
    dtype: str = "compact"
    workers: int = 0
    rebuild: str = "auto"
    verify: str = "changed"
    stream_above_mib: float = 512.0

    @classmethod
    def parse(cls, cfg: Mapping[str, Any]) -> StoreSettings:
        """Read `dataset.storage` and `dataset.store` from the data set's settings."""
        mode = str(cfg.get("storage") or "auto")
        store = cfg.get("store") or {}
        if not isinstance(store, Mapping):
            raise SettingsError(f"setting dataset.store must be a mapping, got {store!r}")
        s = cls(
            mode=mode,
            dir=Path(os.path.expanduser(str(store["dir"]))) if store.get("dir") else None,
            dtype=str(store.get("dtype") or "compact"),
            workers=_int(store.get("workers", 0), "dataset.store.workers"),
            rebuild=str(store.get("rebuild") or "auto"),
            verify=str(store.get("verify") or "changed"),
            stream_above_mib=float(store.get("stream_above_mib", 512.0)),
        )
        for name, value, allowed in (("dataset.storage", s.mode, STORAGE_MODES),
                                     ("dataset.store.dtype", s.dtype, DTYPES),
                                     ("dataset.store.rebuild", s.rebuild, REBUILD),
                                     ("dataset.store.verify", s.verify, VERIFY)):
            if value not in allowed:
                raise SettingsError(f"setting {name} must be one of {list(allowed)}, got {value!r}")
        if s.workers < 0:
            raise SettingsError(f"setting dataset.store.workers must be >= 0 (0: one per core), got {s.workers}")
        if not s.stream_above_mib >= 0:
            raise SettingsError(f"setting dataset.store.stream_above_mib must be >= 0, got {s.stream_above_mib}")
        return s

    @property
    def root(self) -> Path:
        """The store's folder: `dataset.store.dir`, else the default store folder."""
        return self.dir if self.dir is not None else default_store_dir()

    @property
    def processes(self) -> int:
        """Worker processes for preparing: `dataset.store.workers`, else one per CPU."""
        return self.workers or (os.cpu_count() or 1)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise SettingsError(f"setting {name} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name} must be an integer, got {value!r}") from None
