"""Shared by the benchmarks: machine description, JSON output, a Markdown table."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from fed_uml.results import write_json_atomic


def machine() -> dict:
    """The machine a benchmark ran on (CPUs, platform, versions, GPU), saved with its figures."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "date": time.strftime("%Y-%m-%d"),
    }


def speed_probe(steps: int = 20) -> float:
    """Milliseconds per training step of the default small CNN (32 px, batch 32, the machine's torch threads).

    How fast this machine is right now. A shared 2-core machine's speed moves by up to 1.8x between
    hours; figures taken at different times compare only beside it.
    """
    from fed_uml.models import create_model

    model = create_model("small_cnn", {"rgb": 3}, num_classes=10)
    opt = torch.optim.AdamW(model.parameters())
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x, "rgb"), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:  # the first steps build oneDNN's kernels
            times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def table(rows: list[dict], columns: list[str]) -> str:
    """`rows` as a Markdown table of `columns` (floats to 4 significant digits)."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save(name: str, payload: dict, out_dir: str | Path = "benchmarks") -> Path:
    """Write `payload` with the machine's description to `<out_dir>/<name>.json`; returns the path."""
    payload = {"benchmark": name, "machine": machine(), **payload}
    return write_json_atomic(Path(out_dir) / f"{name}.json", payload)
