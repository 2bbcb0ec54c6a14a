"""Flower ServerApp: backbone-only FedAvg over R rounds, then client-side BN calibration.

Never touches an institution's data: it composes the settings, builds the initial backbone,
and only ever sees backbone tensors and scalar metrics. Writes `results.json`,
`backbone.pt` and a per-round `checkpoint.pt` into the run-config `results-dir`.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fed_uml.federated.config import config_from_run_config
from server.rounds import FederatedRun

app = ServerApp()

# In a simulation the ServerApp shares its process with Ray's driver, which warns once, as a
# FutureWarning, about a default that does not concern a CPU run or the project's explicit
# client-gpus; it reads as an error to a newcomer. Only that message is silenced.
warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def default_results_dir(run_id: int) -> Path:
    """`results/run-<id>` under the SuperLink's working directory (pass an absolute
    `results-dir` to choose; a local SuperLink keeps the directory of its first start)."""
    return Path.cwd() / "results" / f"run-{run_id}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = config_from_run_config(context.run_config)
    results_dir = Path(cfg.get("results_dir") or default_results_dir(context.run_id)).expanduser().resolve()
    FederatedRun(grid, cfg, results_dir, run_id=context.run_id).execute()
