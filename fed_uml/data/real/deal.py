"""Step 3 of assembling a real data set: which scenes each modality gets.

Why a step of its own: this is the unpaired protocol. Within each split the scenes are
dealt to the modalities of `dataset.unpaired_among` disjointly (`fed_uml.data.splits.
assign_disjoint`, seeded, stratified by class, within each modality's quota), then each
loaded modality is optionally balanced (`balanced.undersample`, multi-label data sets) and
cut to `samples_per_class` / `test_samples_per_class` scenes per class. With
`dataset.unpaired=false` every modality draws from its whole pool with the same key, so
co-registered modalities share scenes (the paired control).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fed_uml.data import splits as sp
from fed_uml.data.errors import DataError
from fed_uml.data.real.index import Pools
from fed_uml.data.real.labels import LabelSet, choose_label_set
from fed_uml.data.real.settings import RealSettings
from fed_uml.data.scenes import SceneRecord
from fed_uml.data.settings import optional_int, per_modality

log = logging.getLogger(__name__)

# the two quotas, per kind of split
QUOTA_SETTINGS = (("train", "samples_per_class"), ("test", "test_samples_per_class"))


def choose_scenes(cfg: Mapping[str, Any], s: RealSettings, pools: Pools, skipped: dict[str, list[DataError]]
                  ) -> tuple[LabelSet, dict[str, dict[str, list[SceneRecord]]]]:
    """The label set (`labels.choose_label_set`), then the scenes each loaded modality gets."""
    labels = choose_label_set(cfg, s, pools, skipped)
    # `balanced.undersample` belongs to the single-label rule (dataset.task=single_label)
    undersample = (bool(dict(cfg.get("balanced") or {}).get("undersample", False)) and labels.rule_report is not None
                   and labels.task == "single_label")
    return labels, deal_scenes(cfg, s, labels.pools, labels.class_names, undersample)


def deal_scenes(cfg: Mapping[str, Any], s: RealSettings, pools: Pools, class_names: tuple[str, ...],
                undersample: bool) -> dict[str, dict[str, list[SceneRecord]]]:
    """{loaded modality: {"train"/"test": the records it gets}}.

    A class short of its quota is logged (and shows in `info["class_counts"]`).
    """
    chosen: dict[str, dict[str, list[SceneRecord]]] = {m: {} for m in s.modalities}
    for kind, key in QUOTA_SETTINGS:
        quotas = {m: optional_int(per_modality(cfg.get(key), m, f"dataset.{key}")) for m in s.among}
        if s.unpaired and len(s.among) > 1:
            dealt = sp.assign_disjoint(pools[kind], s.seed, None if undersample else quotas, key=kind)
        else:
            dealt = pools[kind]
        for m in s.modalities:
            recs = dealt[m]
            # Paired mode draws with the same key for every modality, so they share scenes.
            mkey = m if s.unpaired else ""
            if undersample:
                recs = sp.undersample_balanced(recs, s.seed, mkey, kind)
            chosen[m][kind] = sp.per_class_subset(recs, quotas[m], s.seed, mkey, kind)
            want = quotas[m]
            if want is not None:
                counts = sp.class_counts([r.label for r in chosen[m][kind]], class_names)
                short = {c: n for c, n in counts.items() if n < want}
                if short:
                    log.warning("%s %s %s: fewer than %s=%d scenes for %s", s.name, m, kind, key, want, short)
    return chosen
