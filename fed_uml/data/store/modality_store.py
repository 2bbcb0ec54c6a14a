"""Opening a modality's store, preparing it first where it is missing, incomplete or corrupt.

Why one function (`open_store`) decides: every user of a store (a centralized run, each
institution, `experiments.prepare`) must treat a store the same way:
- the folder is `<store root>/<data set>-<modality>-<digest>`, the digest of everything that
  shapes the stored pixels (`store_settings`: the sensor's index key, bands, image size, dtype),
  so a store made with other settings is never read by mistake;
- complete (its manifest is there, of this format, for this plan, its files as written): used
  as it is. A file changed since it was written (size or mtime), or `dataset.store.verify=
  always`, has every block's SHA-256 checked first;
- otherwise, under the store's lock (a second process waits, then finds it complete):
  resumed where it stopped; corrupt blocks (checksum mismatch, truncation) prepared again; a
  store of another format version prepared anew; `dataset.store.rebuild=never` refuses each
  case instead, naming the folder and what to run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fed_uml.data.errors import StoreError
from fed_uml.data.real.settings import RealModality, RealSettings
from fed_uml.data.store import layout
from fed_uml.data.store.index import SensorIndex, build_index, data_folder
from fed_uml.data.store.locking import store_lock
from fed_uml.data.store.prepare import Plan, corrupt_blocks, file_states, keep_good_blocks, make_plan, prepare
from fed_uml.data.store.reader import StoreFile
from fed_uml.data.store.settings import StoreSettings

log = logging.getLogger(__name__)


@dataclass
class Found:
    """What is on disk for a plan: a usable store, or why not."""

    store: StoreFile | None = None
    problem: str = "missing"  # missing, incomplete, older, corrupt, other-plan
    detail: str = ""
    corrupt: list[int] | None = None
    manifest: dict[str, Any] | None = None


def store_settings(s: RealSettings, spec: RealModality, index_key: str, dtype_choice: str) -> dict[str, Any]:
    """The settings a store's content depends on; a change makes another store."""
    size = s.image_size or spec.reader.NATIVE_SIZE
    if not size:
        raise StoreError(s.root, f"{spec.reader.NAME} has no native size: set dataset.image_size to store it")
    return {"dataset": s.name, "reader": spec.reader.NAME, "sensor": spec.sensor, "bands": list(spec.bands),
            "image_size": int(size), "dtype": dtype_choice, "index": index_key,
            "folder": str(data_folder(s, spec))}


def store_folder(root: Path, dataset: str, modality: str, settings: dict[str, Any]) -> tuple[Path, str]:
    """The store's folder, named by the digest of its settings, and that digest."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return root / f"{dataset}-{modality}-{key[:16]}", key


def find(folder: Path, plan: Plan, verify: str) -> Found:
    """The store in `folder` if it is complete and sound for `plan` (module docstring)."""
    path = folder / layout.MANIFEST
    if not path.is_file():
        return Found(problem="incomplete" if (folder / layout.PROGRESS).is_file() else "missing")
    try:
        manifest = json.loads(path.read_text())
        version = manifest.get("format")
    except (OSError, ValueError, AttributeError) as e:
        return Found(problem="corrupt", detail=f"unreadable manifest ({e})")
    if version != layout.FORMAT_VERSION:
        return Found(problem="older", detail=f"written by store format {version}, this fed-uml reads "
                                             f"{layout.FORMAT_VERSION}", manifest=manifest)
    if manifest.get("plan") != plan.as_json():
        return Found(problem="other-plan", detail="made for other settings", manifest=manifest)
    changed = file_states(folder) != manifest.get("files")
    if changed or verify == "always":
        corrupt = corrupt_blocks(folder, plan, manifest)
        if corrupt:
            return Found(problem="corrupt", corrupt=corrupt, manifest=manifest,
                         detail=f"{len(corrupt)} of {plan.blocks} blocks do not match their SHA-256 "
                                f"(first: block {corrupt[0]}, rows {plan.block(corrupt[0]).start}..)")
    return Found(store=StoreFile(folder, manifest), manifest=manifest, problem="changed" if changed else "")


def open_store(s: RealSettings, m: str, index: SensorIndex, st: StoreSettings) -> StoreFile:
    """Modality `m`'s store, prepared (or repaired) first if needed; `index` is its sensor's."""
    spec = s.specs[m]
    settings = store_settings(s, spec, index.key, st.dtype)
    folder, key = store_folder(st.root, s.name, m, settings)
    size = settings["image_size"]
    plan = make_plan(key, len(index.records), (len(spec.bands), size, size),
                     layout.stored_dtype(spec.sensor, st.dtype), settings)
    if st.rebuild != "always":
        found = find(folder, plan, st.verify)
        if found.store is not None and found.problem != "changed":
            return found.store
        if st.rebuild == "never" and found.store is None:
            raise StoreError(folder, f"the store of {s.name} {m} is {found.problem}"
                                     f"{': ' + found.detail if found.detail else ''}, and dataset.store.rebuild="
                                     f"never: prepare it (python -m experiments.prepare dataset={s.name} ...) or "
                                     "set dataset.store.rebuild=auto")
    with store_lock(folder):
        found = Found() if st.rebuild == "always" else find(folder, plan, st.verify)
        if found.store is not None:
            if found.problem == "changed" and found.manifest is not None:  # checked sound: remember the files now
                layout.write_json_atomic(folder / layout.MANIFEST, {**found.manifest, "files": file_states(folder)})
            return found.store
        if found.problem == "corrupt" and found.corrupt and found.manifest is not None:
            log.warning("store %s: %s; preparing those blocks again", folder, found.detail)
            keep_good_blocks(folder, plan, found.manifest, found.corrupt)
        elif found.problem in ("older", "other-plan", "corrupt") or st.rebuild == "always":
            if found.problem != "missing":
                log.warning("store %s: %s; preparing it anew", folder, found.detail or found.problem)
            for name in (layout.MANIFEST, layout.PROGRESS, layout.IMAGES, layout.ROWSTATS):
                (folder / name).unlink(missing_ok=True)
        source = index if index.readers else _reindexed(s, spec, index)
        reader = source.reader()
        assert reader is not None  # an index with its readers (as built, or built again)
        manifest = prepare(folder, plan, source.records, reader, st.processes, s.on_error,
                           f"{s.name} {m}", index.splits)
        return StoreFile(folder, manifest)


def _reindexed(s: RealSettings, spec: RealModality, saved: SensorIndex) -> SensorIndex:
    """The index built by the readers again (their files are what preparing reads), checked against the saved one.

    The rows must be the same patches.
    """
    fresh = build_index(s, spec, saved.key)
    if [r.scene for r in fresh.records] != [r.scene for r in saved.records] or fresh.splits != saved.splits:
        raise StoreError(data_folder(s, spec), "the archive's patches differ from its saved index (files added or "
                                               "removed in place): prepare anew with dataset.store.rebuild=always")
    if not fresh.readers:
        raise StoreError(data_folder(s, spec), "no split of the archive can be read")
    return fresh
