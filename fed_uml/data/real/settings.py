"""Step 0 of assembling a real data set: read and check its settings before any file is touched.

Why a step of its own: every later step (indexing, the label rule, the deal, reading) needs
the same parsed facts (which modalities are loaded, among which the deal is made, which
reader, sensor and bands each one uses, the data root, seed and image size), and a bad
setting should fail here, naming the setting, rather than half-way through reading.
Settings that only one later step uses (`balanced`, `classes`, `num_classes`, the quotas)
are read by that step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fed_uml.data.scenes import SceneDataset
from fed_uml.data.settings import as_mapping, data_root, name_list, optional_int, selected_modalities
from fed_uml.results import check_task

# sensor name (in `dataset.sensors.<modality>.sensor`) -> reader class
Readers = Mapping[str, type[SceneDataset]]


@dataclass(frozen=True)
class RealModality:
    """A modality of a real data set: which reader and sensor, which bands."""

    name: str
    reader: type[SceneDataset]
    sensor: str
    bands: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any] | None, readers: Readers, dataset: str) -> RealModality:
        """Read modality `name`'s settings `spec`, checking its sensor and bands against `readers`."""
        spec = dict(spec or {})
        sensor = spec.get("sensor")
        if not isinstance(sensor, str) or sensor not in readers:
            raise ValueError(
                f"dataset {dataset!r}: modality {name!r} needs dataset.sensors.{name}.sensor, one of "
                f"{sorted(readers)} (got {sensor!r})"
            )
        reader = readers[sensor]
        bands = reader.check_bands(sensor, spec.get("bands"))
        return cls(name, reader, sensor, bands)


@dataclass(frozen=True)
class RealSettings:
    """The checked settings of one load of a real data set (see `fed_uml.data.real`)."""

    name: str
    modalities: list[str]  # the loaded ones (`dataset.modalities`)
    among: list[str]  # those the unpaired deal is made among (`dataset.unpaired_among`)
    specs: dict[str, RealModality]  # for every modality in `among`
    root: Path
    seed: int
    image_size: int | None
    on_error: str
    folders: Mapping[str, str]
    download: bool
    unpaired: bool
    train_splits: list[str]
    test_split: str
    classes: tuple[str, ...]  # the readers' full label set
    task: str = "single_label"  # `dataset.task` (fed_uml.results.TASKS)

    @classmethod
    def parse(cls, cfg: Mapping[str, Any], readers: Readers) -> RealSettings:
        """Read the `dataset` settings of a real data set, checking them against `readers`."""
        name = str(cfg.get("name"))
        sensors = dict(cfg.get("sensors") or {})
        names = selected_modalities(cfg, sensors)
        among = unpaired_among(cfg, names, sensors)
        specs = {m: RealModality.parse(m, sensors[m], readers, name) for m in among}
        root = data_root(cfg)
        seed = int(cfg.get("seed", 0) or 0)
        size = optional_int(cfg.get("image_size"))
        on_error = str(cfg.get("on_error") or "raise")
        folders = as_mapping(cfg.get("folders"))
        download = bool(cfg.get("download", False))
        unpaired = bool(cfg.get("unpaired", True))
        train_splits = name_list(cfg.get("train_splits"), ["train"])
        test_split = str(cfg.get("test_split") or "test")
        if test_split in train_splits:
            raise ValueError(f"dataset {name!r}: dataset.test_split {test_split!r} is also in dataset.train_splits")
        class_sets = {spec.reader.CLASSES for spec in specs.values()}
        if len(class_sets) != 1:
            raise ValueError(f"dataset {name!r}: the selected sensors disagree on the label set")
        task = check_task(str(cfg.get("task") or "single_label"))
        if task == "multi_label" and not all(spec.reader.MULTI_LABEL for spec in specs.values()):
            raise ValueError(f"dataset {name!r} is single-label: setting dataset.task=multi_label needs a "
                             "multi-label data set (bigearthnet, bigearthnet_v2)")
        return cls(name, names, among, specs, root, seed, size, on_error, folders, download, unpaired,
                   train_splits, test_split, next(iter(class_sets)), task)

    @property
    def multi_label(self) -> bool:
        """Whether the data set is multi-labelled (its readers say so), whatever the task."""
        return next(iter(self.specs.values())).reader.MULTI_LABEL


def unpaired_among(cfg: Mapping[str, Any], names: list[str], sensors: Mapping[str, Any]) -> list[str]:
    """The modalities the unpaired deal is made among (`dataset.unpaired_among`).

    Why a setting of its own: a federated institution loads only its own modality
    (`dataset.modalities=[s1]`), yet must get exactly the scenes the joint deal gives it,
    so the deal is made among the study's full modality list whatever is loaded. The yaml
    files default it to `${.modalities}`, which Hydra resolves before any override by an
    institution. Unset: the loaded modalities.
    """
    among = cfg.get("unpaired_among")
    if isinstance(among, str):
        among = None if "${" in among else [m for m in among.split(",") if m]
    among = list(among or names)
    missing = [m for m in names if m not in among]
    if missing:
        raise ValueError(f"dataset.modalities {missing} must also be in dataset.unpaired_among {among}")
    unknown = [m for m in among if m not in sensors]
    if unknown:
        raise ValueError(f"dataset.unpaired_among lists {unknown}, which dataset.sensors does not define")
    if len(set(among)) != len(among):
        raise ValueError(f"dataset.unpaired_among lists a modality twice: {among}")
    return among
