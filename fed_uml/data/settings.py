"""Reading the `dataset` config group: the helpers every data set's loader shares.

Why a leaf module: the synthetic and the real loaders, the readers' base class and the
catalog all read the same settings the same way (and fail with the same messages, naming
the setting), and none of them should import another to do so. This module imports nothing
of the project.

Data root convention
    The data root is the setting ``dataset.root``, else the environment variable
    ``FED_UML_DATA``. It is the *parent* folder that holds one subfolder per data set
    (``eurosat_ms/``, ``eurosat_rgb/``, ``eurosat_sar/``, ``bigearthnet_v1/``,
    ``bigearthnet_v2/``, ``sen12ms/``); each data set class names its subfolder in
    ``FOLDER`` and ``dataset.folders`` can rename it. For convenience the root may also
    point at a data set's own folder: when ``<root>/<FOLDER>`` does not exist but the root
    itself has the data set's layout, the root is used as is
    (`fed_uml.data.scenes.SceneDataset.locate`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# How error messages name the root setting.
ROOT_SETTING = "dataset.root (or the environment variable FED_UML_DATA)"


def data_root(cfg: Mapping[str, Any]) -> Path:
    """The data root: the setting `dataset.root`, else the environment variable FED_UML_DATA."""
    root = cfg.get("root") or os.environ.get("FED_UML_DATA")
    if not root:
        raise FileNotFoundError(
            f"dataset {cfg.get('name')!r} needs a data root: set dataset.root=... or the environment "
            "variable FED_UML_DATA"
        )
    return Path(os.path.expanduser(str(root)))


def selected_modalities(cfg: Mapping[str, Any], available: Mapping[str, Any]) -> list[str]:
    """The modalities asked for in `dataset.modalities`, checked against what the data set has."""
    wanted = cfg.get("modalities")
    if isinstance(wanted, str):
        wanted = [m for m in wanted.split(",") if m]
    wanted = list(wanted or [])
    if not wanted:
        raise ValueError(f"dataset {cfg.get('name')!r}: setting dataset.modalities is empty")
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise ValueError(
            f"dataset {cfg.get('name')!r}: unknown modality {unknown[0]!r} in dataset.modalities; "
            f"available: {sorted(available)}"
        )
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"dataset.modalities lists a modality twice: {wanted}")
    return wanted


def per_modality(value: Any, modality: str, setting: str) -> Any:
    """A setting that is either one value for all modalities or a {modality: value} map."""
    if isinstance(value, Mapping):
        if modality not in value:
            raise ValueError(f"setting {setting} has no entry for modality {modality!r}")
        return value[modality]
    return value


def as_mapping(value: object) -> Mapping[str, Any]:
    """A mapping setting that may be null in the yaml."""
    return value if isinstance(value, Mapping) else {}


def name_list(value: Any, default: Sequence[str]) -> list[str]:
    """A list setting that may also be a comma-separated string (null: `default`)."""
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [s for s in value.split(",") if s]
    return list(value)


def optional_int(value: Any) -> int | None:
    """An integer setting where null means "no limit"."""
    return None if value is None else int(value)
