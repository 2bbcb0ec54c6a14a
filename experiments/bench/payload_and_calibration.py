"""Bytes per round per institution, and the cost of BN calibration.

    python -m experiments.bench.payload_and_calibration [overrides...]

Bytes: the ArrayRecord an institution sends each round (backbone only) against the whole
model, in float32 and float16 (measured with Flower's own `ArrayRecord.count_bytes`).
Calibration: Algorithm 1 (E_cal=1) on one modality's training data against one plain
forward pass over the same data in eval mode, both timed here.
"""

from __future__ import annotations

import argparse
import time

import torch

from experiments.bench.common import save, table
from experiments.cli import run_main
from fed_uml.calibration import calibrate_modality
from fed_uml.data import load_dataset
from fed_uml.federated.config import compose_config
from fed_uml.federated.transfer import to_wire
from fed_uml.methods import build_model
from fed_uml.models import shared_state


def bytes_rows(cfg: dict) -> list[dict]:
    """Bytes of the backbone a round sends against the whole model, per backbone and wire dtype."""
    rows = []
    for backbone in ("small_cnn", "resnet18"):
        model_cfg = compose_config([f"model={backbone}"])["model"]
        model_cfg = {**model_cfg, **({"width": cfg["model"]["width"]} if backbone == "small_cnn" else {})}
        name = model_cfg.pop("backbone")
        from fed_uml.models import create_model

        model = create_model(name, {"sar": 2}, 10, model_cfg.pop("specific_layers"), **model_cfg)
        for dtype in ("float32", "float16"):
            rows.append({
                "backbone": backbone, "dtype": dtype,
                "sent_backbone_only": to_wire(shared_state(model), dtype).count_bytes(),
                "whole_model": to_wire(model.state_dict(), dtype).count_bytes(),
            })
    for r in rows:
        r["fraction"] = r["sent_backbone_only"] / r["whole_model"]
    return rows


def calibration_rows(cfg: dict, repeats: int = 3) -> list[dict]:
    """Seconds of a forward pass and of Algorithm 1 over each modality's training data."""
    data = load_dataset(cfg["dataset"])
    model = build_model(cfg["model"], data)
    rows = []
    for k, d in data.items():
        x = d.train.images
        t_fwd, t_cal = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.eval()
            with torch.no_grad():
                for s in range(0, len(x), 64):
                    model(x[s : s + 64], k)
            t_fwd.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            calibrate_modality(model.projection(k), model.backbone, x, 1, 64, k)
            t_cal.append(time.perf_counter() - t0)
        rows.append({"modality": k, "images": len(x), "forward_s": min(t_fwd), "calibration_s": min(t_cal),
                     "ratio": min(t_cal) / min(t_fwd)})
    return rows


def main() -> None:
    """Run the payload and calibration benchmark from the command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose_config(list(args.overrides))
    b = bytes_rows(cfg)
    print(table(b, ["backbone", "dtype", "sent_backbone_only", "whole_model", "fraction"]))
    c = calibration_rows(cfg)
    print(table(c, ["modality", "images", "forward_s", "calibration_s", "ratio"]))
    path = save("payload_and_calibration", {"bytes": b, "calibration": c, "overrides": args.overrides}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
