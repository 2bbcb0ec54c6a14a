"""The real data sets as modalities: readers -> unpaired scene selection -> ModalityData in physical units.

Registered names (config group ``dataset``, files conf/dataset/<name>.yaml):
    ``eurosat``         EuroSAT-SAR (``sar``) vs EuroSAT RGB (``rgb``), the study's pairing;
                        ``ms``/``nir_swir``/... from EuroSAT MS are selectable too.
    ``eurosat_ms``      two optical modalities cut from the same EuroSAT MS tiles
                        (default ``rgb`` vs ``nir_swir``), on disjoint tiles; runs on the
                        shared sample.
    ``bigearthnet``     BigEarthNet-MM v1.0: ``s1`` vs ``s2`` (``rgb`` selectable).
    ``bigearthnet_v2``  reBEN: ``s1`` vs ``s2``.
    ``sen12ms``         SEN12MS: ``s1`` vs ``s2``.

Settings (besides those of conf/dataset/synthetic.yaml: name, root, modalities, sensors,
samples_per_class, test_samples_per_class, image_size, seed):
    ``download``        fetch missing files from the official URLs (checksums verified).
    ``folders``         {sensor: subfolder} to rename a data set's folder under the root.
    ``train_splits``    the official splits pooled for training (default [train]).
    ``test_split``      the official split used for testing (default test).
    ``unpaired``        deal scenes to modalities disjointly (default true; see splits.py).
    ``unpaired_among``  the modalities the deal is made among (default: ``${.modalities}``),
                        so that loading one modality alone (a federated institution) gives
                        it the same scenes as the joint load; their data must be present.
    ``classes``         restrict the label set to these class names (null: all).
    ``num_classes``     if set, the label set must have this many classes (the federated
                        server builds the backbone from it before any data is read).
    ``balanced``        the single-label rule of multi-label data sets (see splits.py).
    ``on_error``        ``raise`` (default) or ``skip``: skip unreadable files, reporting
                        how many (log warning and ``info["skipped"]``).

Normalisation is kept apart from reading: `load_dataset` standardises each modality with the
per-band mean and standard deviation of its own *training* images (after resampling),
`fed_uml.data.normalize.standardize`, stored in ``info["band_mean"]`` / ``info["band_std"]``;
a federated institution does the same on its own share only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fed_uml.data import splits as sp
from fed_uml.modality import ArrayDataset, ModalityData
from fed_uml.data.bigearthnet import BigEarthNet
from fed_uml.data.bigearthnet_v2 import BigEarthNetV2
from fed_uml.data.eurosat import EuroSAT, EuroSATRGB
from fed_uml.data.eurosat_sar import EuroSATSAR
from fed_uml.data.readers import DataError, SceneDataset, SceneRecord, as_mapping
from fed_uml.data.registry import (
    data_root,
    per_modality,
    register_dataset,
    selected_modalities,
)
from fed_uml.data.sen12ms import SEN12MS

log = logging.getLogger(__name__)

# sensor name (in `dataset.sensors.<modality>.sensor`) -> reader class, per registered name
EUROSAT_SENSORS: dict[str, type[SceneDataset]] = {"ms": EuroSAT, "rgb": EuroSATRGB, "sar": EuroSATSAR}
BIGEARTHNET_SENSORS: dict[str, type[SceneDataset]] = {"s1": BigEarthNet, "s2": BigEarthNet}
BIGEARTHNET_V2_SENSORS: dict[str, type[SceneDataset]] = {"s1": BigEarthNetV2, "s2": BigEarthNetV2}
SEN12MS_SENSORS: dict[str, type[SceneDataset]] = {"s1": SEN12MS, "s2": SEN12MS}


@dataclass(frozen=True)
class RealModality:
    """A modality of a real data set: which reader and sensor, which bands."""

    name: str
    reader: type[SceneDataset]
    sensor: str
    bands: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, spec: Mapping | None, readers: Mapping[str, type[SceneDataset]],
              dataset: str) -> RealModality:
        spec = dict(spec or {})
        sensor = spec.get("sensor")
        if sensor not in readers:
            raise ValueError(
                f"dataset {dataset!r}: modality {name!r} needs dataset.sensors.{name}.sensor, one of "
                f"{sorted(readers)} (got {sensor!r})"
            )
        reader = readers[sensor]
        bands = reader.check_bands(sensor, spec.get("bands"))
        return cls(name, reader, sensor, bands)


def _splits_list(value, default: Sequence[str]) -> list[str]:
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [s for s in value.split(",") if s]
    return list(value)


def _among(cfg: Mapping, names: list[str], sensors: Mapping) -> list[str]:
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


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def load_real(cfg: Mapping, readers: Mapping[str, type[SceneDataset]]) -> dict[str, ModalityData]:
    """Build every selected modality of a real data set (see the module docstring)."""
    name = str(cfg.get("name"))
    sensors = dict(cfg.get("sensors") or {})
    names = selected_modalities(cfg, sensors)
    among = _among(cfg, names, sensors)
    specs = {m: RealModality.parse(m, sensors[m], readers, name) for m in among}
    root = data_root(cfg)
    seed = int(cfg.get("seed", 0) or 0)
    size = _opt_int(cfg.get("image_size"))
    on_error = str(cfg.get("on_error") or "raise")
    folders = as_mapping(cfg.get("folders"))
    download = bool(cfg.get("download", False))
    unpaired = bool(cfg.get("unpaired", True))
    train_splits = _splits_list(cfg.get("train_splits"), ["train"])
    test_split = str(cfg.get("test_split") or "test")
    if test_split in train_splits:
        raise ValueError(f"dataset {name!r}: dataset.test_split {test_split!r} is also in dataset.train_splits")

    class_sets = {spec.reader.CLASSES for spec in specs.values()}
    if len(class_sets) != 1:
        raise ValueError(f"dataset {name!r}: the selected sensors disagree on the label set")
    classes = next(iter(class_sets))

    # 1. Index each modality's records per split (no pixels read yet).
    readers_by: dict[tuple[str, str], SceneDataset] = {}
    pools: dict[str, dict[str, list[SceneRecord]]] = {"train": {}, "test": {}}
    skipped: dict[str, list[DataError]] = {m: [] for m in among}
    for m, spec in specs.items():
        for kind, split_names in (("train", train_splits), ("test", [test_split])):
            recs = []
            for split in split_names:
                ds = spec.reader(root, split=split, sensor=spec.sensor, bands=spec.bands, image_size=size,
                                 folder=folders.get(spec.sensor), download=download, on_error=on_error)
                readers_by[(m, split)] = ds
                skipped[m].extend(ds.skipped)
                recs.extend(ds.records)
            pools[kind][m] = recs

    # 2. Multi-label data sets: the balanced single-label rule, and which classes stay.
    rule_report = None
    if getattr(next(iter(specs.values())).reader, "MULTI_LABEL", False):
        balanced = dict(cfg.get("balanced") or {})
        rule = str(balanced.get("rule", "exactly_one"))
        rule_report = {"rule": rule, "min_per_class": int(balanced.get("min_per_class", 1)), "splits": {}}
        for kind in pools:
            for m in among:
                pools[kind][m], rep = sp.single_label(pools[kind][m], rule)
                counts = sp.class_counts([r.label for r in pools[kind][m]], classes)
                rep["per_class"] = {c: n for c, n in counts.items() if n}
                rule_report["splits"].setdefault(kind, {})[m] = rep
        # Retain classes on the training pool of all modalities together (before the unpaired
        # deal), so that every modality has the same label set.
        union = {r.scene: r for m in among for r in pools["train"][m]}
        keep = sp.retain_classes(list(union.values()), len(classes), rule_report["min_per_class"])
        rule_report["dropped_classes"] = [c for i, c in enumerate(classes) if i not in keep]
        first = rule_report["splits"]["train"][names[0]]
        log.info("%s: single-label rule %r kept %d of %d training patches (%s); classes kept: %s",
                 name, rule, first["single_label"], first["patches"], names[0],
                 [classes[i] for i in keep])
    else:
        keep = list(range(len(classes)))
    wanted = cfg.get("classes")
    if wanted:
        unknown = [c for c in wanted if c not in classes]
        if unknown:
            raise ValueError(
                f"dataset {name!r}: unknown class(es) {unknown} in dataset.classes; known: {list(classes)}"
            )
        keep = [i for i in keep if classes[i] in set(wanted)]
    if not keep:
        raise ValueError(f"dataset {name!r}: no class is left after the label rule and dataset.classes")
    class_names = tuple(classes[i] for i in keep)
    expected = cfg.get("num_classes")
    if expected is not None and int(expected) != len(class_names):
        raise ValueError(
            f"dataset {name!r}: setting dataset.num_classes={expected}, but the label set has "
            f"{len(class_names)} classes {list(class_names)}; set dataset.classes and dataset.num_classes to match"
        )
    for kind in pools:
        for m in among:
            pools[kind][m] = sp.relabel(pools[kind][m], keep)
    if rule_report is not None:
        rule_report["classes"] = list(class_names)

    # 3. Which scenes each modality gets: disjoint deal, balance, per-class subsets.
    undersample = bool(dict(cfg.get("balanced") or {}).get("undersample", False)) and rule_report is not None
    chosen: dict[str, dict[str, list[SceneRecord]]] = {m: {} for m in names}
    for kind, key in (("train", "samples_per_class"), ("test", "test_samples_per_class")):
        quotas = {m: _opt_int(per_modality(cfg.get(key), m, f"dataset.{key}")) for m in among}
        if unpaired and len(among) > 1:
            dealt = sp.assign_disjoint(pools[kind], seed, None if undersample else quotas, key=kind)
        else:
            dealt = pools[kind]
        for m in names:
            recs = dealt[m]
            # Paired mode draws with the same key for every modality, so they share scenes.
            mkey = m if unpaired else ""
            if undersample:
                recs = sp.undersample_balanced(recs, seed, mkey, kind)
            chosen[m][kind] = sp.per_class_subset(recs, quotas[m], seed, mkey, kind)
            want = quotas[m]
            if want is not None:
                counts = sp.class_counts([r.label for r in chosen[m][kind]], class_names)
                short = {c: n for c, n in counts.items() if n < want}
                if short:
                    log.warning("%s %s %s: fewer than %s=%d scenes for %s", name, m, kind, key, want, short)

    # 4. Read the pixels (of the loaded modalities only), in physical units (load_dataset normalises).
    out = {}
    for m in names:
        spec = specs[m]
        arrays, labels_, scenes = {}, {}, {}
        for kind in ("train", "test"):
            imgs, labs, ids = [], [], []
            for r in chosen[m][kind]:
                ds = readers_by[(m, r.split)]
                try:
                    imgs.append(ds.load(r))
                except DataError as e:
                    if on_error == "raise":
                        raise
                    skipped[m].append(e)
                    continue
                labs.append(r.label)
                ids.append(r.scene)
            if not imgs:
                raise ValueError(
                    f"dataset {name!r}, modality {m!r}: the {kind} set is empty (pool of "
                    f"{len(pools[kind][m])} scenes over classes {list(class_names)}; check dataset.root, "
                    f"dataset.{'train_splits' if kind == 'train' else 'test_split'} and the class settings)"
                )
            arrays[kind] = torch.from_numpy(np.stack(imgs).astype(np.float32, copy=False))
            labels_[kind] = torch.tensor(labs, dtype=torch.long)
            scenes[kind] = ids
        counts = {k: sp.class_counts(labels_[k].tolist(), class_names) for k in ("train", "test")}
        if skipped[m]:
            log.warning("%s %s: skipped %d bad file(s) (dataset.on_error=skip), e.g. %s",
                        name, m, len(skipped[m]), skipped[m][0])
        log.info("%s %s (%s %s): train %s; test %s", name, m, spec.reader.NAME, ",".join(spec.bands),
                 counts["train"], counts["test"])
        info = {
            "dataset": name,
            "reader": spec.reader.NAME,
            "sensor": spec.sensor,
            "bands": list(spec.bands),
            "image_size": int(arrays["train"].shape[-1]),
            "class_counts": counts,
            "unpaired": unpaired,
            "seed": seed,
            "skipped": {"count": len(skipped[m]), "files": [str(e) for e in skipped[m][:20]]},
        }
        if rule_report is not None:
            info["label_rule"] = rule_report
        out[m] = ModalityData(
            name=m,
            train=ArrayDataset(arrays["train"], labels_["train"], scenes["train"]),
            test=ArrayDataset(arrays["test"], labels_["test"], scenes["test"]),
            class_names=class_names,
            band_names=spec.bands,
            info=info,
        )
    return out


@register_dataset("eurosat")
@register_dataset("eurosat_ms")
def load_eurosat(cfg: Mapping) -> dict[str, ModalityData]:
    return load_real(cfg, EUROSAT_SENSORS)


@register_dataset("bigearthnet")
def load_bigearthnet(cfg: Mapping) -> dict[str, ModalityData]:
    return load_real(cfg, BIGEARTHNET_SENSORS)


@register_dataset("bigearthnet_v2")
def load_bigearthnet_v2(cfg: Mapping) -> dict[str, ModalityData]:
    return load_real(cfg, BIGEARTHNET_V2_SENSORS)


@register_dataset("sen12ms")
def load_sen12ms(cfg: Mapping) -> dict[str, ModalityData]:
    return load_real(cfg, SEN12MS_SENSORS)
