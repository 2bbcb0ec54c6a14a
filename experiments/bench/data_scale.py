"""Data at scale: native-layout archives of growing size, prepared into stores and streamed.

    python -m experiments.bench.data_scale --sizes 5000,50000 [--kinds v1,lmdb] [--institutions 4,64,1000]
                                           [--work /work/scratch/store] [--keep] [overrides...]

For every kind and size it generates an archive of synthetic pixels with the real shapes and
dtypes (`v1`: BigEarthNet v1.0's folders, 12 uint16 S2 band files at 120/60/20 px and 2
float32 S1 files per pair, their label JSON and the split CSVs; `lmdb`: reBEN's LMDB
environment of safetensors patches, the same bands, beside metadata.parquet), then measures:

- `prepare`: `python -m experiments.prepare` (all cores) under /usr/bin/time: wall seconds and
  peak resident memory of its largest process, and the disk the archive and the store take;
- `run`: `python -m experiments.run method=uml training.epochs=1` streaming from the store
  (training, calibration and evaluation): wall seconds, peak resident memory, the metrics;
- `loader`: images per second the store's reader gives (random batches, normalised) beside
  the images per second one training step of the run's model consumes: the loader must not be
  the bottleneck;
- `federated` (kind `v1`, each N of `--institutions`): a Flower simulation of N institutions over
  the store (`experiments.bench.scale.with_flower`, under the shared Flower lock), peak resident
  memory of all its processes together, and the bytes every process read from the store
  (FED_UML_STORE_READS), against the bytes the institutions' shares hold.

The machine's speed is probed before and after (`common.speed_probe`). Archives and stores are
deleted after each size unless `--keep`. Writes `<out>/data_scale.json` and prints a table.
Defaults: image size 64 px, the multi-label task, `dataset.storage=stream`.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from experiments.bench.common import save, speed_probe, table

FLOWER_LOCK = "/tmp/fed-uml-flower.lock"
S2_SIZE = {"B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60, "B07": 60, "B08": 120,
           "B8A": 60, "B09": 20, "B11": 60, "B12": 60}
S1_BANDS = ("VV", "VH")
BENCH_OVERRIDES = ["dataset.image_size=64", "dataset.storage=stream", "num_threads=2"]


# ---------------------------------------------------------------- synthetic archives


def _labels43() -> list[str]:
    from fed_uml.data.bigearthnet import LABEL_43_TO_19

    return sorted(LABEL_43_TO_19)


def _textures(rng: np.random.Generator, size: int, count: int, dtype, scale: float) -> np.ndarray:
    return (rng.normal(0, scale, (count, size, size))).astype(dtype)


class _Pixels:
    """Per-band patches from a bank of noise textures plus a level set by the patch's first label.

    The level gives a model something to learn; fast enough for 50,000 pairs.
    """

    def __init__(self, seed: int = 0, bank: int = 64):
        rng = np.random.default_rng(seed)
        self.bank = bank
        self.s2 = {n: _textures(rng, n, bank, np.float32, 150.0) for n in (20, 60, 120)}
        self.s1 = _textures(rng, 120, bank, np.float32, 2.0)

    def s2_band(self, i: int, band: str, level: float) -> np.ndarray:
        t = self.s2[S2_SIZE[band]][(i * 7 + len(band) + ord(band[-1])) % self.bank]
        return np.clip(t + level + 40 * (ord(band[-1]) % 13), 0, 20000).astype(np.uint16)

    def s1_band(self, i: int, band: str, level: float) -> np.ndarray:
        return (self.s1[(i * 5 + (band == "VH")) % self.bank] + level - 7 * (band == "VH")).astype(np.float32)


def _patch(i: int) -> tuple[str, str, list[str], str]:
    """S2 name, S1 name, 43-class labels and split of pair i (60/20/20 train/val/test)."""
    labels = _labels43()
    rng = np.random.default_rng(i)
    picked = [labels[j] for j in sorted(rng.choice(len(labels), size=int(rng.integers(1, 4)), replace=False))]
    split = ("train",) * 6 + ("val",) * 2 + ("test",) * 2
    tile = f"{i // 1000}_{i % 1000}"
    return (f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{tile}", f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{tile}",
            picked, split[i % 10])


class _TiffTemplate:
    """An uncompressed one-band TIFF of a shape and dtype, whose pixel bytes are swapped per file.

    Writing 700,000 small TIFFs with tifffile costs 0.8 ms each; this, a write.
    """

    def __init__(self, shape: tuple[int, int], dtype):
        import tifffile

        arr = np.zeros(shape, dtype=dtype)
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="minisblack")
        self.raw = buf.getvalue()
        with tifffile.TiffFile(io.BytesIO(self.raw)) as tif:
            page = tif.pages[0]
            self.offset = page.dataoffsets[0]
            assert sum(page.databytecounts) == arr.nbytes
        self.nbytes = arr.nbytes

    def bytes(self, arr: np.ndarray) -> bytes:
        return self.raw[:self.offset] + arr.tobytes() + self.raw[self.offset + self.nbytes:]


def _write_v1_range(args: tuple[str, int, int]) -> None:
    folder, start, end = Path(args[0]), args[1], args[2]
    px = _Pixels()
    templates = {n: _TiffTemplate((n, n), np.uint16) for n in (20, 60, 120)}
    s1_template = _TiffTemplate((120, 120), np.float32)
    labels43 = _labels43()
    for i in range(start, end):
        s2, s1, labels, _ = _patch(i)
        level = 300 + 40 * labels43.index(labels[0])
        d2, d1 = folder / "BigEarthNet-v1.0" / s2, folder / "BigEarthNet-S1-v1.0" / s1
        d2.mkdir(parents=True, exist_ok=True)
        d1.mkdir(parents=True, exist_ok=True)
        for b in S2_SIZE:
            (d2 / f"{s2}_{b}.tif").write_bytes(templates[S2_SIZE[b]].bytes(px.s2_band(i, b, level)))
        for b in S1_BANDS:
            (d1 / f"{s1}_{b}.tif").write_bytes(s1_template.bytes(px.s1_band(i, b, -25 + level / 400)))
        (d2 / f"{s2}_labels_metadata.json").write_text(json.dumps({"labels": labels}))
        (d1 / f"{s1}_labels_metadata.json").write_text(json.dumps({"labels": labels, "corresponding_s2_patch": s2}))


def make_v1(root: Path, n: int, processes: int) -> Path:
    """BigEarthNet v1.0 native layout with n synthetic pairs under root/bigearthnet_v1."""
    folder = root / "bigearthnet_v1"
    chunks = [(str(folder), a, min(a + 500, n)) for a in range(0, n, 500)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for _ in pool.imap_unordered(_write_v1_range, chunks):
            pass
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i in range(n):
        s2, s1, _, split = _patch(i)
        rows[split].append(f"{s2},{s1}\n")
    for split, lines in rows.items():
        (folder / f"bigearthnet-{split}.csv").write_text("".join(lines))
    return folder


def make_lmdb(root: Path, n: int) -> Path:
    """The LMDB form of reBEN with n synthetic pairs: root/bigearthnet_v2/{metadata.parquet, reBEN.lmdb/}."""
    import lmdb
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import save as st_save

    from fed_uml.data.bigearthnet import CLASSES_19, LABEL_43_TO_19

    folder = root / "bigearthnet_v2"
    folder.mkdir(parents=True, exist_ok=True)
    px = _Pixels()
    labels43 = _labels43()
    cols: dict[str, list] = {"patch_id": [], "s1_name": [], "labels": [], "split": [], "country": []}
    per_pair = sum(S2_SIZE[b] ** 2 * 2 for b in S2_SIZE) + 2 * 120 * 120 * 4 + 4096
    env = lmdb.open(str(folder / "reBEN.lmdb"), map_size=int(per_pair * n * 1.3) + (1 << 30), writemap=False)
    txn = env.begin(write=True)
    for i in range(n):
        s2, s1, labels, split = _patch(i)
        level = 300 + 40 * labels43.index(labels[0])
        txn.put(s2.encode(), st_save({b: px.s2_band(i, b, level) for b in S2_SIZE}))
        txn.put(s1.encode(), st_save({b: px.s1_band(i, b, -25 + level / 400) for b in S1_BANDS}))
        names19 = sorted({LABEL_43_TO_19[x] for x in labels}, key=CLASSES_19.index)
        for k, v in (("patch_id", s2), ("s1_name", s1), ("labels", names19),
                     ("split", "validation" if split == "val" else split), ("country", "Austria")):
            cols[k].append(v)
        if i % 1000 == 999:
            txn.commit()
            txn = env.begin(write=True)
    txn.commit()
    env.close()
    pq.write_table(pa.table(cols), folder / "metadata.parquet")
    return folder


# ---------------------------------------------------------------- measurements


def du(path: Path) -> int:
    """Bytes a folder takes on disk (allocated blocks)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def timed(cmd: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run `cmd` under /usr/bin/time -v.

    Wall seconds and peak resident memory of its largest process (GNU time's maximum RSS covers the
    command and the processes it waited for).
    """
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"wall_s": wall, "peak_rss_gib": int(rss.group(1)) / 2**20 if rss else float("nan"), "stdout": proc.stdout}


def loader_vs_training(dataset_overrides: list[str], batches: int = 100) -> dict:
    """Images per second: random normalised batches from the store vs one training step."""
    import torch

    from fed_uml.data import load_dataset
    from fed_uml.federated.config import compose_config
    from fed_uml.methods import build_model, train_settings
    from fed_uml.training.loop import _Cycler, make_optimizer, task_loss

    cfg = compose_config(dataset_overrides)
    torch.set_num_threads(int(cfg.get("num_threads") or 2))
    data = load_dataset(cfg["dataset"])
    settings = train_settings(cfg)
    out = {}
    for m, d in data.items():
        g = torch.Generator().manual_seed(0)
        cycler = _Cycler(d.train, settings.batch_size, g)
        t0 = time.perf_counter()
        for _ in range(batches):
            cycler.next()
        loader = batches * cycler.batch_size / (time.perf_counter() - t0)
        model = build_model(cfg["model"], {m: d})
        opt = make_optimizer(model.parameters(), settings)
        x, y = cycler.next()
        for _ in range(3):
            loss = task_loss(model(x, m), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        t0 = time.perf_counter()
        steps = 20
        for _ in range(steps):
            loss = task_loss(model(x, m), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train = steps * len(x) / (time.perf_counter() - t0)
        out[m] = {"loader_images_per_s": loader, "training_images_per_s": train,
                  "loader_over_training": loader / train}
    return out


@contextmanager
def flower_lock():
    """Hold the shared Flower lock, so that only one Flower runtime runs on the machine at a time."""
    with open(FLOWER_LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def federated(overrides: list[str], n: int, reads_dir: Path) -> dict:
    """A Flower simulation of n institutions over the store: memory of the runtime, bytes read."""
    from experiments.bench.scale import with_flower
    from fed_uml.data import load_dataset
    from fed_uml.data.store.reader import READS_ENV
    from fed_uml.federated.config import compose_config

    shutil.rmtree(reads_dir, ignore_errors=True)
    reads_dir.mkdir(parents=True)
    os.environ[READS_ENV] = str(reads_dir)
    fed = ["federated.num_rounds=2", "federated.evaluate_every=0", "federated.min_institutions=2", *overrides,
           "num_threads=1"]
    try:
        with flower_lock():
            out = with_flower(fed, n, 1, 0.0)
    finally:
        os.environ.pop(READS_ENV, None)
    read = sum(json.loads(p.read_text())["bytes_read"] for p in reads_dir.iterdir() if not p.name.startswith("."))
    cfg = compose_config(fed)
    data = load_dataset(cfg["dataset"])
    share_train = share_test = 0
    for m in data:
        row = data[m].train.images.store.row_bytes
        share_train += len(data[m].train) * row  # the institutions of a modality split its rows
        share_test += len(data[m].test) * row
    rounds = 2
    # training reads per round, beside what calibration (train once, test before and after) reads
    training = read - share_train - 2 * share_test
    out.update({"institutions": n, "store_bytes_read": read, "share_train_bytes": share_train,
                "share_test_bytes": share_test,
                "read_per_round_over_share": training / rounds / max(share_train, 1)})
    return out


def bench_size(kind: str, n: int, work: Path, institutions: list[int], processes: int, keep: bool,
               overrides: list[str]) -> dict:
    """Generate `n` pairs of `kind`, then time preparing the store, a run, the loader and federated reads."""
    root = work / f"{kind}-{n}"
    data_root, store = root / "data", root / "store"
    dataset = "bigearthnet" if kind == "v1" else "bigearthnet_v2_lmdb"
    base = [f"dataset={dataset}", f"dataset.root={data_root}", f"dataset.store.dir={store}", *BENCH_OVERRIDES,
            *overrides]
    row: dict = {"kind": kind, "pairs": n}
    if not (root / "archive.done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        make_v1(data_root, n, processes) if kind == "v1" else make_lmdb(data_root, n)
        row["generate_s"] = time.perf_counter() - t0
        (root / "archive.done").write_text("")
    row["archive_gib"] = du(data_root) / 2**30
    py = sys.executable
    prep = timed([py, "-m", "experiments.prepare", *base, f"dataset.store.workers={processes}"],
                 log=root / "prepare.log")
    row.update(prepare_s=prep["wall_s"], prepare_peak_rss_gib=prep["peak_rss_gib"], store_gib=du(store) / 2**30)
    run = timed([py, "-m", "experiments.run", "method=uml", "training.epochs=1", f"results_dir={root / 'run'}",
                 *base], log=root / "run.log")
    res = json.loads((root / "run" / "results.json").read_text())
    row.update(run_s=run["wall_s"], run_peak_rss_gib=run["peak_rss_gib"],
               run_metric=res[f"mean_{res['primary_metric']}"], run_n_train={k: v["n_train"] for k, v in
                                                                          res["modalities"].items()})
    row["loader"] = loader_vs_training(base)
    if kind == "v1":
        row["federated"] = [federated(base, k, root / "reads") for k in institutions]
    if not keep:
        shutil.rmtree(root)
    return row


def main() -> None:
    """Run the data-scale benchmark from the command line."""
    p = argparse.ArgumentParser(prog="python -m experiments.bench.data_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="500,5000")
    p.add_argument("--kinds", default="v1,lmdb")
    p.add_argument("--institutions", default="4,64,1000", help="simulated institutions (kind v1); '' for none")
    p.add_argument("--work", default="/work/scratch/store")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--keep", action="store_true", help="keep the archives and stores")
    p.add_argument("--out", default="benchmarks")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    institutions = [int(x) for x in args.institutions.split(",") if x]
    payload = {"speed_probe_ms_start": speed_probe(), "rows": []}
    for kind in [k for k in args.kinds.split(",") if k]:
        for n in [int(x) for x in args.sizes.split(",") if x]:
            payload["rows"].append(bench_size(kind, n, work, institutions, args.processes, args.keep, args.overrides))
            save("data_scale", payload, args.out)
    payload["speed_probe_ms_end"] = speed_probe()
    path = save("data_scale", payload, args.out)
    print(table(payload["rows"], ["kind", "pairs", "archive_gib", "store_gib", "prepare_s", "prepare_peak_rss_gib",
                                  "run_s", "run_peak_rss_gib", "run_metric"]))
    for r in payload["rows"]:
        for m, v in r["loader"].items():
            print(f"{r['kind']} {r['pairs']} {m}: loader {v['loader_images_per_s']:.0f} img/s, "
                  f"training {v['training_images_per_s']:.0f} img/s")
        for f in r.get("federated", []):
            print(f"{r['kind']} {r['pairs']} N={f['institutions']}: peak {f['peak_memory_gib']:.2f} GiB, "
                  f"read {f['store_bytes_read'] / 2**30:.2f} GiB, "
                  f"per round / share {f['read_per_round_over_share']:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
