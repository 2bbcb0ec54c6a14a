"""Data-set name -> loader registry: `load_dataset(cfg)` gives {modality: ModalityData}.

Every source (the embedded synthetic sensors, EuroSAT, BigEarthNet, ...) registers a loader
that takes the `dataset` config group and returns in-memory modalities in physical units over
one common label set; `load_dataset` normalises them (`fed_uml.data.normalize`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from fed_uml.modality import ModalityData

Loader = Callable[[Mapping], dict[str, ModalityData]]
_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def decorator(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return decorator


def available_datasets() -> list[str]:
    return sorted(_LOADERS)


def data_root(cfg: Mapping) -> Path:
    """The data root: the setting `dataset.root`, else the environment variable FED_UML_DATA."""
    root = cfg.get("root") or os.environ.get("FED_UML_DATA")
    if not root:
        raise FileNotFoundError(
            f"dataset {cfg.get('name')!r} needs a data root: set dataset.root=... or the environment "
            "variable FED_UML_DATA"
        )
    return Path(os.path.expanduser(str(root)))


def selected_modalities(cfg: Mapping, available: Mapping) -> list[str]:
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


def per_modality(value, modality: str, setting: str):
    """A setting that is either one value for all modalities or a {modality: value} map."""
    if isinstance(value, Mapping):
        if modality not in value:
            raise ValueError(f"setting {setting} has no entry for modality {modality!r}")
        return value[modality]
    return value


def load_dataset(cfg: Mapping, normalize: bool = True) -> dict[str, ModalityData]:
    """{modality: ModalityData} of the `dataset` config group; with `normalize` (default) each
    modality standardised per band with its training statistics, else in physical units."""
    name = cfg.get("name")
    # Import the built-in loaders lazily so that importing fed_uml.data stays cheap.
    from fed_uml.data import loaders  # noqa: F401

    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r} (setting dataset.name); available: {available_datasets()}")
    data = _LOADERS[name](cfg)
    classes = {d.class_names for d in data.values()}
    if len(classes) != 1:
        raise ValueError(f"dataset {name!r}: modalities disagree on the label set")
    if normalize:
        from fed_uml.data.normalize import standardize

        data = {k: standardize(d) for k, d in data.items()}
    return data
