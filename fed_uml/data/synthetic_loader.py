"""The `synthetic` data set: the embedded sensors of `fed_uml.data.synthetic` as modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fed_uml.modality import ArrayDataset, ModalityData
from fed_uml.data.registry import per_modality, register_dataset, selected_modalities
from fed_uml.data.synthetic import CLASSES, ModalitySpec, SensorNoise, generate


@register_dataset("synthetic")
def load_synthetic(cfg: Mapping) -> dict[str, ModalityData]:
    sensors = dict(cfg.get("sensors") or {})
    names = selected_modalities(cfg, sensors)
    noise = SensorNoise(**dict(cfg.get("noise") or {}))
    size, seed = int(cfg.get("image_size", 32)), int(cfg.get("seed", 0))
    out = {}
    for name in names:
        spec = ModalitySpec.parse(name, sensors[name])
        splits = {}
        for split, key in (("train", "samples_per_class"), ("test", "test_samples_per_class")):
            n = int(per_modality(cfg.get(key), name, f"dataset.{key}"))
            x, y = generate(name, spec, n, split, size, noise, seed)
            splits[split] = (torch.from_numpy(x), torch.from_numpy(y))
        out[name] = ModalityData(
            name=name,
            train=ArrayDataset(*splits["train"]),
            test=ArrayDataset(*splits["test"]),
            class_names=CLASSES,
            band_names=spec.bands,
            info={"sensor": spec.sensor},
        )
    return out
