"""The catalog of data sets: name -> loader, and `load_dataset(cfg)`, the one way data is loaded.

Why one module: it is the only place that knows every built-in data set, so they are listed
here explicitly (`BUILTIN`), each a loader that takes the `dataset` config group and returns
{modality: `ModalityData`} in physical units over one common label set. The loaders never
import the catalog (no import cycle, no registration by side effect); users add their own
with `register_dataset(name, loader)`, which refuses a name already taken.

`load_dataset(cfg, normalize=True)` looks up `dataset.name`, checks that the modalities
agree on the label set and that their targets are those of `dataset.task` (class
indices (N,) for single_label, the default; multi-hot (N, C) for multi_label) and,
unless `normalize=False`, standardises each modality per band with the statistics of its
own training images (`fed_uml.data.normalize.standardize`). A federated institution loads
with `normalize=False` and standardises its own share.

`modality_bands(dataset_cfg, modality)` says which bands, in which order, a run's settings
give a modality of a built-in data set, without reading any data: a model file is checked
against it when it is loaded (`fed_uml.model_file`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from fed_uml.data.bigearthnet import BigEarthNet
from fed_uml.data.bigearthnet_lmdb import BigEarthNetV2LMDB
from fed_uml.data.bigearthnet_v2 import BigEarthNetV2
from fed_uml.data.eurosat import EuroSAT, EuroSATRGB
from fed_uml.data.eurosat_sar import EuroSATSAR
from fed_uml.data.normalize import standardize
from fed_uml.data.real import load_real
from fed_uml.data.real.settings import Readers, RealModality
from fed_uml.data.sen12ms import SEN12MS
from fed_uml.data.synthetic import ModalitySpec, load_synthetic
from fed_uml.errors import SettingsError
from fed_uml.modality import ModalityData
from fed_uml.results import check_task

Loader = Callable[[Mapping[str, Any]], dict[str, ModalityData]]

# sensor name (in `dataset.sensors.<modality>.sensor`) -> reader class, per real data set
EUROSAT_SENSORS = {"ms": EuroSAT, "rgb": EuroSATRGB, "sar": EuroSATSAR}
BIGEARTHNET_SENSORS = {"s1": BigEarthNet, "s2": BigEarthNet}
BIGEARTHNET_V2_SENSORS = {"s1": BigEarthNetV2, "s2": BigEarthNetV2}
BIGEARTHNET_V2_LMDB_SENSORS = {"s1": BigEarthNetV2LMDB, "s2": BigEarthNetV2LMDB}
SEN12MS_SENSORS = {"s1": SEN12MS, "s2": SEN12MS}

# The built-in real data sets and their readers.
REAL_READERS: dict[str, Readers] = {
    "eurosat": EUROSAT_SENSORS,
    "eurosat_ms": EUROSAT_SENSORS,
    "bigearthnet": BIGEARTHNET_SENSORS,
    "bigearthnet_v2": BIGEARTHNET_V2_SENSORS,
    "bigearthnet_v2_lmdb": BIGEARTHNET_V2_LMDB_SENSORS,
    "sen12ms": SEN12MS_SENSORS,
}
# The built-in data sets (conf/dataset/<name>.yaml).
BUILTIN: dict[str, Loader] = {
    "synthetic": load_synthetic,
    **{name: partial(load_real, readers=readers) for name, readers in REAL_READERS.items()},
}
_LOADERS: dict[str, Loader] = dict(BUILTIN)


def register_dataset(name: str, loader: Loader) -> Loader:
    """Make `loader` available as `dataset.name=<name>`; a name already taken is refused."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a data set name must be a non-empty string, got {name!r}")
    if name in _LOADERS:
        raise ValueError(f"data set {name!r} is already registered; choose another name "
                         f"(taken: {available_datasets()})")
    if not callable(loader):
        raise TypeError(f"the loader of data set {name!r} must be callable, got {type(loader).__name__}")
    _LOADERS[name] = loader
    return loader


def available_datasets() -> list[str]:
    """Names of the data sets a config may choose (built-in and registered)."""
    return sorted(_LOADERS)


def readers_of(name: str) -> Readers:
    """The {sensor: reader class} table of a real data set (what its store is prepared with)."""
    readers = getattr(_LOADERS.get(name), "keywords", {}).get("readers")
    if readers is None:
        real = sorted(n for n, loader in _LOADERS.items() if getattr(loader, "keywords", {}).get("readers"))
        raise SettingsError(f"dataset {name!r} is not read from files, so it has no store to prepare "
                            f"(setting dataset.name; real data sets: {real})")
    return readers


def load_dataset(cfg: Mapping[str, Any], normalize: bool = True) -> dict[str, ModalityData]:
    """{modality: ModalityData} of the `dataset` config group.

    With `normalize` (default) each modality standardised per band with its training statistics,
    else in physical units.
    """
    name = cfg.get("name")
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r} (setting dataset.name); available: {available_datasets()}")
    task = check_task(str(cfg.get("task") or "single_label"))
    data = _LOADERS[name](cfg)
    classes = {d.class_names for d in data.values()}
    if len(classes) != 1:
        raise ValueError(f"dataset {name!r}: modalities disagree on the label set")
    got = {"multi_label" if d.train.labels.ndim == 2 else "single_label" for d in data.values()}
    if got != {task}:
        raise ValueError(f"dataset {name!r} gives {'/'.join(sorted(got))} targets, but setting dataset.task is "
                         f"{task!r} (multi_label needs a multi-label data set: bigearthnet, bigearthnet_v2)")
    if normalize:
        data = {k: standardize(d) for k, d in data.items()}
    return data


def modality_bands(dataset_cfg: Mapping[str, Any], modality: str) -> tuple[str, ...] | None:
    """The bands, in input order, that the `dataset` settings `dataset_cfg` give `modality`.

    For a built-in data set (the loader's own parsing, no data read); None where that cannot be
    told: a registered data set, or settings that do not define the modality.
    """
    name = dataset_cfg.get("name")
    sensors = dataset_cfg.get("sensors")
    if not isinstance(sensors, Mapping) or modality not in sensors:
        return None
    try:
        if name == "synthetic":
            return ModalitySpec.parse(modality, sensors[modality]).bands
        if name in REAL_READERS:
            return RealModality.parse(modality, sensors[modality], REAL_READERS[name], str(name)).bands
    except ValueError:  # settings the loader itself would refuse
        return None
    return None
