"""The prepared data store (fed_uml/data/store): streamed equals in-memory, and every bad input
(a bad archive file, an older or corrupt store, a full disk, two writers at once, an
interruption) ends in a clear error or a sound store, never in a half-written store being read.

Archives are the tiny generated fixtures (tests/fixtures/make_fixtures.py) and the shared
samples; every test prepares its stores under its own tmp_path.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from fed_uml.data import load_dataset
from fed_uml.data.errors import DataError, StoreError
from fed_uml.data.store import layout, prepare
from fed_uml.data.store.dataset import StreamedDataset
from fed_uml.errors import SettingsError
from tests.conftest import shared_data_root
from tests.fixtures.make_fixtures import (
    dataset_config,
    make_bigearthnet_v1,
    make_bigearthnet_v2,
    make_bigearthnet_v2_lmdb,
)


def ben_cfg(root: Path, store: Path, name: str = "bigearthnet", storage: str = "stream", **overrides) -> dict:
    settings = {"storage": storage, "store.dir": str(store), "store.workers": 1, "image_size": 32, **overrides}
    return dataset_config(name, root, **settings)


def store_folders(store: Path) -> list[Path]:
    return sorted(p for p in store.iterdir() if p.is_dir() and p.name != "index")


def s2_folder(v1: Path, split: str = "train", n: int = 0) -> Path:
    s2 = (v1 / f"bigearthnet-{split}.csv").read_text().splitlines()[n].split(",")[0]
    return v1 / "BigEarthNet-v1.0" / s2


# ---------------------------------------------------------------- streamed == in memory


def _run(cfg: dict) -> dict:
    from fed_uml.centralized import run_centralized
    from tests.conftest import tiny_config

    full = tiny_config()
    full["dataset"] = cfg
    return run_centralized(full)["modalities"]


@pytest.mark.parametrize("name", ["bigearthnet", "eurosat_ms"])
def test_streamed_run_equals_the_in_memory_run_bit_for_bit_on_the_shared_samples(tmp_path, name):
    """Same seed, same data: a UML run streamed from a float32 store gives exactly the metrics of
    the in-memory run (same patches, same band statistics, same normalised batches)."""
    root = shared_data_root()
    if root is None or not (root / ("bigearthnet_v1" if name == "bigearthnet" else name)).is_dir():
        pytest.skip("the shared samples are not here (FED_UML_DATA)")
    memory = _run(dataset_config(name, root, storage="memory", image_size=32))
    cfg = dataset_config(name, root, storage="stream", image_size=32,
                         **{"store.dir": str(tmp_path), "store.dtype": "float32", "store.workers": 1})
    streamed_data, memory_data = load_dataset(cfg), load_dataset({**cfg, "storage": "memory"})
    for m, d in streamed_data.items():
        assert isinstance(d.train, StreamedDataset)
        assert (d.info["band_mean"], d.info["band_std"]) == (memory_data[m].info["band_mean"],
                                                             memory_data[m].info["band_std"])
        assert torch.equal(d.train.images[:], memory_data[m].train.images)
        assert torch.equal(d.test.images[:], memory_data[m].test.images)
    streamed = _run(cfg)
    assert streamed == memory


def test_compact_store_differs_from_the_readers_by_its_stated_precision(tmp_path):
    """uint16 digital numbers: at most 0.5 DN from the resampled values; float16 dB: at most half
    a float16 step (2^-7 dB below |32| dB)."""
    root = make_bigearthnet_v1(tmp_path / "data").parent
    raw = load_dataset(ben_cfg(root, tmp_path / "s", storage="memory"), normalize=False)
    compact = load_dataset(ben_cfg(root, tmp_path / "s"), normalize=False)
    for m, bound in (("s2", 0.5), ("s1", 2.0 ** -7)):
        exact, stored = raw[m].train.images, compact[m].train.images[:]
        assert 0 < (exact - stored).abs().max() <= bound
    assert compact["s2"].train.images.store.dtype == np.uint16
    assert compact["s1"].train.images.store.dtype == np.float16


def test_a_second_run_reads_the_store_without_the_archive(tmp_path):
    """The index (v1's per-patch JSON) and the pixels are read once: with the archive's patch
    folders gone, a run still loads from the store."""
    import shutil

    v1 = make_bigearthnet_v1(tmp_path / "data")
    cfg = ben_cfg(v1.parent, tmp_path / "s")
    first = load_dataset(cfg)
    shutil.rmtree(v1 / "BigEarthNet-v1.0")
    shutil.rmtree(v1 / "BigEarthNet-S1-v1.0")
    again = load_dataset(cfg)
    for m in first:
        assert torch.equal(first[m].train.images[:], again[m].train.images[:])
        assert torch.equal(first[m].test.labels, again[m].test.labels)


def test_auto_streams_only_above_the_size_setting(tmp_path):
    root = make_bigearthnet_v1(tmp_path / "data").parent
    small = load_dataset(ben_cfg(root, tmp_path / "s", storage="auto"))
    assert not any(isinstance(d.train, StreamedDataset) for d in small.values())
    assert not (tmp_path / "s").exists(), "auto wrote a store for a small data set"
    big = load_dataset(ben_cfg(root, tmp_path / "s", storage="auto", **{"store.stream_above_mib": 0}))
    assert all(isinstance(d.train, StreamedDataset) for d in big.values())


@pytest.mark.parametrize("key,value", [("storage", "disk"), ("store.dtype", "int8"), ("store.rebuild", "sometimes"),
                                       ("store.workers", -1)])
def test_bad_store_settings_are_refused_naming_the_setting(tmp_path, key, value):
    root = make_bigearthnet_v1(tmp_path / "data").parent
    with pytest.raises(SettingsError, match=f"dataset.{key}"):
        load_dataset(ben_cfg(root, tmp_path / "s", **{key: value}))


# ---------------------------------------------------------------- reBEN's LMDB


def test_reben_lmdb_gives_the_native_layout_s_patches(tmp_path, monkeypatch):
    """The LMDB environment of safetensors patches (rico-hdl's form) and the native band files
    give the same patches, labels and splits (the environment reopened every 3 reads, as it is
    every 512 to keep its mapped pages out of resident memory)."""
    from fed_uml.data import bigearthnet_lmdb

    monkeypatch.setattr(bigearthnet_lmdb, "READS_PER_OPEN", 3)
    root = tmp_path / "data"
    make_bigearthnet_v2(root)
    make_bigearthnet_v2_lmdb(root)
    native = load_dataset(ben_cfg(root, tmp_path / "s", name="bigearthnet_v2", storage="memory"), normalize=False)
    lmdb = load_dataset(ben_cfg(root, tmp_path / "s", name="bigearthnet_v2_lmdb", storage="memory"),
                        normalize=False)
    streamed = load_dataset(ben_cfg(root, tmp_path / "s", name="bigearthnet_v2_lmdb",
                                    **{"store.dtype": "float32"}), normalize=False)
    for m in ("s1", "s2"):
        assert native[m].train.scene_ids == lmdb[m].train.scene_ids == streamed[m].train.scene_ids
        assert torch.equal(native[m].train.images, lmdb[m].train.images)
        assert torch.equal(native[m].train.images, streamed[m].train.images[:])
        assert torch.equal(native[m].test.labels, lmdb[m].test.labels)


def test_a_missing_or_corrupt_lmdb_patch_names_its_key(tmp_path):
    import lmdb

    root = tmp_path / "data"
    folder = make_bigearthnet_v2_lmdb(root)
    env = lmdb.open(str(folder / "reBEN.lmdb"))
    with env.begin(write=True) as txn:
        keys = [k.decode() for k, _ in txn.cursor() if k.startswith(b"S2")]
        txn.put(keys[0].encode(), b"not safetensors")
        txn.delete(keys[1].encode())
    env.close()
    cfg = ben_cfg(root, tmp_path / "s", name="bigearthnet_v2_lmdb", storage="memory",
                  unpaired=False, modalities=["s2"])
    with pytest.raises(DataError, match=r"reBEN.lmdb\[S2") as err:
        load_dataset(cfg)
    assert keys[0] in str(err.value) or keys[1] in str(err.value)
    data = load_dataset({**cfg, "on_error": "skip", "storage": "stream"})
    assert data["s2"].info["skipped"]["count"] == 2


# ---------------------------------------------------------------- bad input


def test_bad_archive_files_are_named_and_refused_or_skipped_with_a_count(tmp_path):
    """A missing and a corrupt band file: `on_error=raise` stops preparing, naming the file;
    fixed, the next run resumes; `on_error=skip` stores them as bad rows, named and counted,
    and left out of the run."""
    v1 = make_bigearthnet_v1(tmp_path / "data")
    missing, corrupt = s2_folder(v1, n=0), s2_folder(v1, n=1)
    band = missing / f"{missing.name}_B04.tif"
    kept = band.read_bytes()
    band.unlink()
    (corrupt / f"{corrupt.name}_B02.tif").write_bytes(b"II*\x00 not a tiff")
    cfg = ben_cfg(v1.parent, tmp_path / "s", modalities=["s2"], unpaired=False)
    with pytest.raises(DataError, match=f"{missing.name}_B04.tif: file not found.*run again"):
        load_dataset(cfg)
    data = load_dataset({**cfg, "on_error": "skip"})
    skipped = data["s2"].info["skipped"]
    assert skipped["count"] == 2
    assert any(f"{corrupt.name}_B02.tif" in f for f in skipped["files"])
    assert any(f"{missing.name}_B04.tif" in f for f in skipped["files"])
    assert missing.name not in data["s2"].train.scene_ids
    band.write_bytes(kept)  # fixed: a new store (skip mode left its bad rows in the other one)
    with pytest.raises(DataError, match=f"{corrupt.name}_B02.tif"):
        load_dataset(cfg)  # the raise-mode store resumes and meets the corrupt file


def test_an_older_store_format_is_rebuilt_or_refused(tmp_path):
    root = make_bigearthnet_v1(tmp_path / "data").parent
    cfg = ben_cfg(root, tmp_path / "s", modalities=["s1"], unpaired=False)
    before = load_dataset(cfg)["s1"].train.images[:]
    (folder,) = store_folders(tmp_path / "s")
    manifest = json.loads((folder / layout.MANIFEST).read_text())
    (folder / layout.MANIFEST).write_text(json.dumps({**manifest, "format": 0}))
    with pytest.raises(StoreError, match="store format 0.*rebuild=never"):
        load_dataset({**cfg, "store": {**cfg["store"], "rebuild": "never"}})
    after = load_dataset(cfg)["s1"].train.images[:]  # rebuild=auto
    assert json.loads((folder / layout.MANIFEST).read_text())["format"] == layout.FORMAT_VERSION
    assert torch.equal(before, after)


@pytest.mark.slow
def test_a_corrupt_or_truncated_store_is_detected_and_repaired_or_refused(tmp_path):
    root = make_bigearthnet_v1(tmp_path / "data").parent
    cfg = ben_cfg(root, tmp_path / "s", modalities=["s2"], unpaired=False)
    good = load_dataset(cfg)["s2"].train.images[:]
    (folder,) = store_folders(tmp_path / "s")
    images = folder / layout.IMAGES
    data = bytearray(images.read_bytes())
    data[-100:] = bytes(100)  # a flipped stretch in the last block
    images.write_bytes(bytes(data))
    never = {**cfg, "store": {**cfg["store"], "rebuild": "never"}}
    with pytest.raises(StoreError, match="do not match their SHA-256"):
        load_dataset(never)
    assert torch.equal(load_dataset(cfg)["s2"].train.images[:], good)  # the block prepared again
    with open(images, "r+b") as f:
        f.truncate(images.stat().st_size // 2)
    with pytest.raises(StoreError, match="do not match their SHA-256"):
        load_dataset(never)
    assert torch.equal(load_dataset(cfg)["s2"].train.images[:], good)


def test_a_full_disk_gives_a_clear_error_and_nothing_half_written_is_used(tmp_path, monkeypatch):
    """No room for the reservation: refused before decoding. Disk full in the middle: refused,
    no manifest; the next run resumes and gives the store a clean run gives."""
    root = make_bigearthnet_v1(tmp_path / "data").parent
    monkeypatch.setattr(layout, "BLOCK_BYTES", 1)  # one row per block: several blocks
    cfg = ben_cfg(root, tmp_path / "s", modalities=["s2"], unpaired=False)

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(prepare.os, "posix_fallocate", no_room)
        with pytest.raises(StoreError, match="no space left.*GiB needed.*dataset.store.dir"):
            load_dataset(cfg)
    writes = {"n": 0}
    real = prepare.StoreFiles.write_rows

    def fills_up(self, start, images, stats):
        writes["n"] += 1
        if writes["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, start, images, stats)

    with monkeypatch.context() as m:
        m.setattr(prepare.StoreFiles, "write_rows", fills_up)
        with pytest.raises(StoreError, match="no space left"):
            load_dataset(cfg)
    (folder,) = store_folders(tmp_path / "s")
    assert not (folder / layout.MANIFEST).exists(), "a half-written store was marked complete"
    resumed = load_dataset(cfg)["s2"].train.images[:]
    fresh = load_dataset({**cfg, "store": {**cfg["store"], "dir": str(tmp_path / "fresh")}})["s2"].train.images[:]
    assert torch.equal(resumed, fresh)


def test_an_interrupted_preparation_resumes_with_the_blocks_not_done(tmp_path, monkeypatch):
    root = make_bigearthnet_v1(tmp_path / "data").parent
    monkeypatch.setattr(layout, "BLOCK_BYTES", 1)
    monkeypatch.setattr(prepare, "COMMIT_SECONDS", 0.0)
    cfg = ben_cfg(root, tmp_path / "s", modalities=["s1"], unpaired=False)
    done, real = [], prepare._prepare_block

    def interrupted(job):
        if len(done) == 5:
            raise KeyboardInterrupt
        done.append(job[0])
        return real(job)

    monkeypatch.setattr(prepare, "_prepare_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(cfg)
    first = list(done)
    done.clear()
    monkeypatch.setattr(prepare, "_prepare_block", lambda job: (done.append(job[0]), real(job))[1])
    data = load_dataset(cfg)
    assert sorted(first + done) == list(range(len(first) + len(done))), "a block was prepared twice or never"
    assert not set(first) & set(done) and len(first) == 5
    assert len(data["s1"].train) > 0


def _prepare_in_a_process(cfg: dict, out: str) -> None:
    """Prepare slowly (one row per block, 20 ms each), so that the other process comes while
    this one holds the lock; the log says who waited."""
    import logging
    import time

    from fed_uml.data.catalog import readers_of
    from fed_uml.data.store.assemble import prepare_stores

    torch.set_num_threads(1)
    logging.basicConfig(filename=out + ".log", level=logging.INFO)
    layout.BLOCK_BYTES = 1
    real = prepare._prepare_block
    prepare._prepare_block = lambda job: (time.sleep(0.02), real(job))[1]
    rows = prepare_stores(cfg, readers_of(cfg["name"]))
    Path(out).write_text(json.dumps(rows))


@pytest.mark.slow
def test_two_processes_preparing_the_same_store_at_once_both_get_it_whole(tmp_path, monkeypatch):
    """One prepares while the other waits on the lock, then finds it complete: one store,
    every block's checksum sound, the same answer for both."""
    root = make_bigearthnet_v1(tmp_path / "data").parent
    cfg = ben_cfg(root, tmp_path / "s")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_prepare_in_a_process, args=(cfg, str(tmp_path / f"out{i}.json"))) for i in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in (0, 1)]
    assert outs[0] == outs[1]
    logs = [(tmp_path / f"out{i}.json.log").read_text() for i in (0, 1)]
    assert sum("waiting for another process" in log for log in logs) >= 1, "the two never met at the lock"
    assert sum(log.count("preparing 23 of 23 rows") for log in logs) == 2, "a store was prepared twice"
    for folder in store_folders(tmp_path / "s"):
        manifest = json.loads((folder / layout.MANIFEST).read_text())
        plan = prepare.Plan(**{k: (tuple(v) if k == "shape" else v) for k, v in manifest["plan"].items()
                               if k != "format"})
        assert prepare.corrupt_blocks(folder, plan, manifest) == []
    assert len(store_folders(tmp_path / "s")) == 2


@pytest.mark.slow
def test_workers_in_processes_write_the_store_a_single_process_writes(tmp_path, monkeypatch):
    root = make_bigearthnet_v1(tmp_path / "data").parent
    monkeypatch.setattr(layout, "BLOCK_BYTES", 8 * 2 * 32 * 32 * 2)  # 8 rows of s1 per block
    one = load_dataset(ben_cfg(root, tmp_path / "one", modalities=["s1"], unpaired=False))
    two = load_dataset(ben_cfg(root, tmp_path / "two", modalities=["s1"], unpaired=False, **{"store.workers": 2}))
    assert torch.equal(one["s1"].train.images[:], two["s1"].train.images[:])
    (a,), (b,) = store_folders(tmp_path / "one"), store_folders(tmp_path / "two")
    manifests = [json.loads((folder / layout.MANIFEST).read_text()) for folder in (a, b)]
    assert manifests[0]["blocks"] == manifests[1]["blocks"]


# ---------------------------------------------------------------- federation


def test_an_institution_reads_only_its_share_and_holds_no_pixels(tmp_path):
    """Over a store, an institution's data are row numbers and the store's handle; a round of
    training reads its own rows, and its normalisation equals the in-memory path's."""
    from fed_uml.data.normalize import standardize
    from fed_uml.data.store.reader import READS
    from fed_uml.federated.institution import Institution, _modality_seed
    from fed_uml.federated.partition import split_indices
    from fed_uml.federated.roles import InstitutionId
    from fed_uml.modality import ModalityData
    from fed_uml.models import shared_state
    from tests.conftest import tiny_config

    root = make_bigearthnet_v1(tmp_path / "data").parent
    cfg = tiny_config()
    cfg["dataset"] = ben_cfg(root, tmp_path / "s", **{"store.dtype": "float32"})
    cfg["federated"] = {"partitioning": "iid", "dirichlet_alpha": 0.5, "num_rounds": 1, "local_steps": 0}
    insts = [Institution(cfg, InstitutionId("s2", i, 2)) for i in range(2)]
    rows = [set(i.train.images.rows.tolist()) for i in insts]
    assert not rows[0] & rows[1]
    assert all(i.train.images.nbytes + i.test.images.nbytes < 1024 for i in insts)
    row_bytes = insts[0].train.images.store.row_bytes
    before = READS.total
    insts[0].fit(shared_state(insts[0]._new_model()), None, 1, 1)
    read = READS.total - before
    assert 0 < read <= len(insts[0].train) * row_bytes * 2  # its rows (batches of 8, cycled once at most)
    full = load_dataset({**cfg["dataset"], "storage": "memory", "modalities": ["s2"]}, normalize=False)["s2"]
    idx = split_indices(full.train.labels.numpy(), 2, 0, "iid", 0.5, _modality_seed(cfg["seed"], "partition", "s2"))
    local = standardize(ModalityData(full.name, full.train.subset(idx), full.test, full.class_names,
                                     full.band_names, full.info))
    assert local.info["band_mean"] == insts[0].data.info["band_mean"]
    assert torch.equal(local.train.images, insts[0].train.images[:])


def test_a_deployed_institution_prepares_its_store_under_its_node_state_dir(tmp_path):
    """A SuperNode started with a node-config state-dir keeps its store on its own disk."""
    from clients.handlers import _new_institution
    from tests.flower_helpers import context

    root = make_bigearthnet_v1(tmp_path / "data").parent
    run_config = {"dataset": "bigearthnet", "data-root": str(root), "seed": 0,
                  "overrides": "dataset.storage=stream dataset.image_size=16 dataset.store.workers=1 model.width=8"}
    node = {"partition-id": 0, "num-partitions": 1, "modality": "s1", "state-dir": str(tmp_path / "node")}
    inst = _new_institution(context(run_config, node))
    assert isinstance(inst.train, StreamedDataset)
    assert inst.train.images.store.folder.parent == tmp_path / "node" / "store"


def test_sen12ms_land_cover_labels_are_read_once_by_the_index(tmp_path):
    """SEN12MS scene labels come from the land-cover patches when indexing; runs after that read
    the store's index table, so they no longer need the land-cover files."""
    from tests.fixtures.make_fixtures import make_sen12ms

    folder = make_sen12ms(tmp_path / "data")
    cfg = dataset_config("sen12ms", folder.parent, storage="stream",
                         **{"store.dir": str(tmp_path / "s"), "store.workers": 1})
    first = load_dataset(cfg)
    for lc in folder.rglob("*_lc_*.tif"):
        lc.unlink()
    again = load_dataset(cfg)
    for m in first:
        assert torch.equal(first[m].train.labels, again[m].train.labels)
        assert first[m].train.scene_ids == again[m].train.scene_ids
