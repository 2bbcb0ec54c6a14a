"""Centralized training throughput: fed-uml's unpaired loop against a plain PyTorch loop.

    python -m experiments.bench.training_throughput [--epochs 3] [--out benchmarks]

Both train the same UML model (two modalities) on the same in-memory data with the same
batches; the plain loop has no augmentation, logging or metrics: it is the limit of this
machine for this model. Reported: images per second (forward + backward + step).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from experiments.bench.common import save, table
from experiments.cli import run_main
from fed_uml.data import load_dataset
from fed_uml.federated.config import compose_config
from fed_uml.methods import build_model, train_settings
from fed_uml.training import train_unpaired


def plain_loop(model, data, batch_size: int, epochs: int, lr: float) -> float:
    """Images per second of a plain PyTorch loop over the same model and data, the floor to compare with."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    n = max(len(d.train) for d in data.values())
    steps = -(-n // batch_size)
    images = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for s in range(steps):
            loss = 0.0
            for k, d in data.items():
                i = (s * batch_size) % len(d.train)
                x, y = d.train.images[i : i + batch_size], d.train.labels[i : i + batch_size]
                loss = loss + F.cross_entropy(model(x, k), y)
                images += len(y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return images / (time.perf_counter() - t0)


def main() -> None:
    """Run the training-throughput benchmark from the command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.width=16")
    args = ap.parse_args()
    cfg = compose_config(["training.log_every=0"] + args.overrides)
    data = load_dataset(cfg["dataset"])
    settings = train_settings(cfg)
    rows = []
    for name in ("plain PyTorch loop", "fed-uml train_unpaired", "fed-uml train_unpaired (no augmentation)"):
        torch.manual_seed(0)
        model = build_model(cfg["model"], data)
        n_img = args.epochs * max(len(d.train) for d in data.values()) * len(data)
        if name == "plain PyTorch loop":
            ips = plain_loop(model, data, settings.batch_size, args.epochs, settings.lr)
        else:
            settings.augment = "no augmentation" not in name
            t0 = time.perf_counter()
            train_unpaired(model, {k: d.train for k, d in data.items()}, settings, epochs=args.epochs)
            ips = n_img / (time.perf_counter() - t0)
        rows.append({"loop": name, "images_per_second": ips})
    base = rows[0]["images_per_second"]
    for r in rows:
        r["relative_to_plain"] = r["images_per_second"] / base
    print(table(rows, ["loop", "images_per_second", "relative_to_plain"]))
    path = save("training_throughput", {"rows": rows, "epochs": args.epochs, "overrides": args.overrides}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
