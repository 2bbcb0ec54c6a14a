"""`load_real`: the steps of `fed_uml.data.real` in order, for one real data set.

Why apart from the steps: it is the one place that shows the whole assembly at a glance
(settings -> index -> label set -> deal -> pixels); each step is in its own module. The
same steps run over a prepared store (`fed_uml.data.store.assemble`) where `dataset.storage`
says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fed_uml.data.memory import check_fits
from fed_uml.data.real.deal import choose_scenes
from fed_uml.data.real.index import index_scenes
from fed_uml.data.real.pixels import read_modality
from fed_uml.data.real.settings import Readers, RealSettings
from fed_uml.data.store.settings import StoreSettings
from fed_uml.modality import ModalityData


def load_real(cfg: Mapping[str, Any], readers: Readers) -> dict[str, ModalityData]:
    """Every modality of `dataset.modalities` of a real data set, in physical units.

    Read by `readers` ({sensor: reader class}; see `fed_uml.data.real`); with `dataset.storage`
    other than `memory`, through the prepared store (`fed_uml.data.store`).
    """
    s = RealSettings.parse(cfg, readers)
    storage = StoreSettings.parse(cfg)
    if storage.mode != "memory":
        from fed_uml.data.store.assemble import load_with_store

        return load_with_store(cfg, s, storage)
    index = index_scenes(s)
    labels, chosen = choose_scenes(cfg, s, index.pools, index.skipped)
    check_fits(sum(len(records) * len(s.specs[m].bands) * _pixels(s, m) for m in s.modalities
                   for records in chosen[m].values()),
               f"{s.name} ({', '.join(s.modalities)})", "dataset.samples_per_class, dataset.image_size, "
               "dataset.modalities, or dataset.storage=stream (the prepared store)")
    return {m: read_modality(s, m, chosen[m], index, labels) for m in s.modalities}


def _pixels(s: RealSettings, m: str) -> int:
    """Pixels per band of one scene of modality `m` once read (the reader's native size unless set)."""
    size = s.image_size or s.specs[m].reader.NATIVE_SIZE or 120
    return int(size) * int(size)
