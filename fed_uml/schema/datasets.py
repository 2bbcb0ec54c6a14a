"""The `dataset` settings: one schema per kind of data set; each data set's own values in conf/dataset/<name>.yaml.

Why both a schema and yaml files here: what differs from one data set to the next (its
modalities, sensors and bands, image size, number of classes) is data, kept in the data set's
yaml file; what every data set of a kind shares (where the data root comes from, the unpaired
deal, the error policy, the multi-label task) is declared once, here, with its type. The
`DATASETS` table says which schema each built-in data set's file is composed against
(`fed_uml.schema.store`); a test checks that no yaml file restates a default of its schema.
A data set registered by a user (`fed_uml.data.catalog.register_dataset`) without a schema of
its own is read against `DatasetSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from fed_uml.schema.fields import listed, nested, run_config


@dataclass
class DatasetSettings:
    """What every data set has: its modalities and their sensors, sizes, the data root and the seed."""

    name: str = MISSING
    """The data set (`dataset=<name>` picks the whole group)."""
    num_classes: int | None = MISSING
    """Size of the label set (the federated server builds the backbone from it before any data
    is read; dataset.classes restricts the set: then set this to their number)."""
    root: str | None = run_config("data-root", None)
    """The data root holding one folder per data set (null: the environment variable
    FED_UML_DATA). A path to the data set's own folder works too."""
    modalities: list[str] = run_config("modalities", MISSING)
    """The modalities of the run, each a key of `sensors`."""
    sensors: dict[str, Any] = MISSING
    """Every selectable modality: which sensor sees the scenes and which bands are kept,
    {modality: {sensor, bands}}."""
    samples_per_class: Any = None
    """Training scenes per class and modality: one number for all modalities, or a map such as
    {sar: 20, rgb: 200}; null: all."""
    test_samples_per_class: Any = None
    """Test scenes per class and modality, as samples_per_class."""
    image_size: int | None = MISSING
    """Pixels of the square images (other sizes are resampled bilinearly)."""
    seed: int = "${seed}"  # type: ignore[assignment]  # an interpolation, resolved to an int
    """Seed of the data: the unpaired deal, the subsets, the synthetic scenes."""


@dataclass
class SensorNoise:
    """Noise and variability levels of the synthetic sensor models (fed_uml/data/synthetic.py)."""

    optical_noise: float = 0.01
    """Additive Gaussian noise of the optical sensor, in reflectance units."""
    optical_material_jitter: float = 0.08
    """Per-scene spectral variability of every material, relative."""
    sar_looks: float = 4.0
    """Equivalent looks of the multiplicative Gamma speckle (0: no speckle)."""
    sar_scene_offset_db: float = 1.0
    """Stddev of the per-scene calibration and incidence-angle offset, in dB."""
    sar_material_jitter_db: float = 1.5
    """Per-scene backscatter variability of every material, in dB."""
    scene_variability: float = 1.0
    """Scene conditions (season, moisture, wind, roof type); 0 switches them off."""


@dataclass
class SyntheticDatasetSettings(DatasetSettings):
    """Embedded synthetic sensors (fed_uml/data/synthetic.py): no download."""

    noise: SensorNoise = nested(SensorNoise)
    """The sensor models' noise and scene variability."""


@dataclass
class StoreSettings:
    """The prepared data store of a real data set (fed_uml/data/store; docs: data at scale)."""

    dir: str | None = None
    """Where stores live (null: $FED_UML_STORE, else ~/.cache/fed-uml/store; a federated
    institution with a node-config state-dir uses <state-dir>/store)."""
    dtype: str = "compact"
    """compact: integer digital numbers as uint16/uint8 (rounded after resampling, at most 0.5
    DN off), dB as float16 (at most 0.008 dB off); float32: exactly the in-memory values."""
    workers: int = 0
    """Processes that prepare a store (0: one per core)."""
    rebuild: str = "auto"
    """auto: resume, repair corrupt blocks, rebuild an older format; always: prepare anew;
    never: refuse anything but a complete, current store."""
    verify: str = "changed"
    """changed: check the SHA-256 of every block when the files changed since they were
    written; always: at every open."""
    stream_above_mib: float = 512.0
    """With storage=auto, a modality whose chosen patches would take more than this many MiB
    as float32 tensors is streamed from the store."""


@dataclass
class RealDatasetSettings(DatasetSettings):
    """A real data set in its native layout on disk (fed_uml/data/real/)."""

    train_splits: list[str] = listed("train")
    """The official splits pooled for training."""
    test_split: str = "test"
    """The official split used for testing."""
    unpaired: bool = True
    """true: no scene is used by two modalities (unpaired protocol)."""
    unpaired_among: list[str] = "${.modalities}"  # type: ignore[assignment]  # an interpolation
    """The modalities the disjoint deal is made among; loading one of them alone (a federated
    institution) then gives it the same scenes as the joint load."""
    classes: list[str] | None = None
    """Restrict the label set to these class names (null: all)."""
    on_error: str = "raise"
    """raise: stop at the first bad file; skip: leave bad files out and report how many."""
    download: bool = False
    """Fetch missing data from the official URLs (checksums verified) into the data root."""
    folders: dict[str, str] | None = None
    """{sensor: subfolder} to rename the data set's folders under the root (null: the data
    set's own names, e.g. eurosat_ms)."""
    storage: str = "auto"
    """How the pixels are read: memory (the chosen patches read into tensors), stream (the
    store prepared once, then read batch by batch), or auto (stream a modality whose chosen
    patches exceed store.stream_above_mib MiB as float32)."""
    store: StoreSettings = nested(StoreSettings)
    """The prepared store (fed_uml/data/store)."""


@dataclass
class TaskDefaults:
    """What a task changes in a multi-label data set's settings."""

    num_classes: int | None = None
    """The size of the label set (null: decided by the data)."""
    train_splits: list[str] = listed("train")
    """The official splits pooled for training."""


@dataclass
class BalancedSettings:
    """The balanced single-label set of a multi-label data set (fed_uml/data/splits.py)."""

    rule: str = "exactly_one"
    """Keep patches with exactly one 19-class label."""
    min_per_class: int = 1
    """Keep classes with at least this many such training patches (raise it on the full archive:
    rare classes would otherwise cut every class to a handful)."""
    undersample: bool = True
    """Undersample every class to the smallest one."""


def _task_defaults() -> dict[str, TaskDefaults]:
    return {"multi_label": TaskDefaults(19, ["train", "val"]), "single_label": TaskDefaults(None, ["train"])}


@dataclass
class MultiLabelDatasetSettings(RealDatasetSettings):
    """A multi-label data set (BigEarthNet v1 and v2): its task and what the task changes."""

    task: str = "multi_label"
    """multi_label (every patch with all its 19-class labels, multi-hot targets, binary
    cross-entropy, macro/micro mAP and macro F1) or single_label (the study's balanced
    single-label set, see `balanced`; accuracy). dataset.task=single_label alone switches
    everything that depends on it (task_defaults)."""
    task_defaults: dict[str, TaskDefaults] = nested(_task_defaults)
    """What each task changes. Multi-label: the full 19-class nomenclature, so num_classes is
    known before any data is read, and the official train and val splits pooled for training
    (no model selection uses val). Single-label: the rule decides the classes from the data, so
    num_classes is null (federated runs: set dataset.classes to the kept classes, they are
    logged, and num_classes to their number), and train only, as the study."""
    num_classes: int | None = "${oc.select:.task_defaults.${.task}.num_classes,null}"  # type: ignore[assignment]
    train_splits: list[str] = "${oc.select:.task_defaults.${.task}.train_splits,[train]}"  # type: ignore[assignment]
    balanced: BalancedSettings = nested(BalancedSettings)
    """The balanced single-label set (dataset.task=single_label only)."""


# data set name -> the schema its conf/dataset/<name>.yaml is composed against
DATASETS: dict[str, type[DatasetSettings]] = {
    "synthetic": SyntheticDatasetSettings,
    "eurosat": RealDatasetSettings,
    "eurosat_ms": RealDatasetSettings,
    "sen12ms": RealDatasetSettings,
    "bigearthnet": MultiLabelDatasetSettings,
    "bigearthnet_v2": MultiLabelDatasetSettings,
    "bigearthnet_v2_lmdb": MultiLabelDatasetSettings,
}
