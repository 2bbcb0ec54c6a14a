"""Shared by the benchmarks: machine description, JSON output, a Markdown table."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from fed_uml.results import write_json_atomic


def machine() -> dict:
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


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save(name: str, payload: dict, out_dir: str | Path = "benchmarks") -> Path:
    payload = {"benchmark": name, "machine": machine(), **payload}
    return write_json_atomic(Path(out_dir) / f"{name}.json", payload)
