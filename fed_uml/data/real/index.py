"""Step 1 of assembling a real data set: index every modality's scenes, per split, no pixel read.

Why before anything else: the label rule, the class selection and the unpaired deal all
work on scene records (id, label(s), split, files), so they can choose scenes from the
whole pool before a single raster is decoded. One reader is opened per modality and
official split; files that fail to index are raised, or kept as skipped with
`dataset.on_error=skip`. Split files that list one scene in two of the splits a run reads
are refused here, whatever `dataset.on_error` (`check_disjoint_splits`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fed_uml.data.errors import DataError
from fed_uml.data.real.settings import RealSettings
from fed_uml.data.scenes import SceneDataset, SceneRecord, check_disjoint_splits

# "train" or "test" -> modality -> records
Pools = dict[str, dict[str, list[SceneRecord]]]


@dataclass
class SceneIndex:
    """The readers opened, the scenes they index and the files skipped so far."""

    readers: dict[tuple[str, str], SceneDataset]  # (modality, official split) -> reader
    pools: Pools  # "train" (the pooled train_splits) and "test" -> modality -> records
    skipped: dict[str, list[DataError]]  # modality -> files left out (on_error=skip)


def index_scenes(s: RealSettings) -> SceneIndex:
    """Open one reader per modality of `s.among` and official split; pool their records."""
    readers: dict[tuple[str, str], SceneDataset] = {}
    pools: Pools = {"train": {}, "test": {}}
    skipped: dict[str, list[DataError]] = {m: [] for m in s.among}
    for m, spec in s.specs.items():
        for kind, split_names in (("train", s.train_splits), ("test", [s.test_split])):
            recs = []
            for split in split_names:
                ds = spec.reader(s.root, split=split, sensor=spec.sensor, bands=spec.bands, image_size=s.image_size,
                                 folder=s.folders.get(spec.sensor), download=s.download, on_error=s.on_error)
                readers[(m, split)] = ds
                skipped[m].extend(ds.skipped)
                recs.extend(ds.records)
            pools[kind][m] = recs
        check_disjoint_splits([readers[(m, split)] for split in (*s.train_splits, s.test_split)])
    return SceneIndex(readers, pools, skipped)
