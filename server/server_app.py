"""Flower ServerApp: backbone-only FedAvg over R rounds, then client-side BN calibration.

Never touches an institution's data: it composes the settings, builds the initial backbone,
and only ever sees backbone tensors and scalar metrics. Writes `results.json`,
`backbone.pt` and a per-round `checkpoint.pt` into the run-config `results-dir`.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid, ServerApp

from fed_uml.errors import UserError
from fed_uml.federated.config import config_from_run_config
from fed_uml.preflight import check_federated
from fed_uml.schema import settings_of
from server.delivery_index import FLOWER_VERSION, flower_version, patch_in_memory_link_state
from server.rounds import FederatedRun

app = ServerApp()

# In a simulation the ServerApp shares its process with Ray's driver, which warns once, as a
# FutureWarning, about a default that does not concern a CPU run or the project's explicit
# client-gpus; it reads as an error to a newcomer. Only that message is silenced.
warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def default_results_dir(run_id: int) -> Path:
    """`results/run-<id>` under the SuperLink's working directory.

    Pass an absolute `results-dir` to choose; a local SuperLink keeps the directory of its first
    start.
    """
    return Path.cwd() / "results" / f"run-{run_id}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Check every setting, then run.

    A user's error (a setting, a file) ends the run as one line `error: <message>` in the log
    instead of a traceback (docs: reliability).
    """
    try:
        cfg = config_from_run_config(context.run_config)
        settings = settings_of(cfg)
        results_dir = Path(settings.results_dir or default_results_dir(context.run_id)).expanduser().resolve()
        check_federated(cfg, results_dir)
        if settings.federated.delivery_index and not patch_in_memory_link_state():
            FLOWER_LOGGER.warning("federated.delivery_index: Flower %s is not %s, left as shipped", flower_version(),
                                  FLOWER_VERSION)
        FederatedRun(grid, cfg, results_dir, run_id=context.run_id).execute()
    except UserError as e:
        FLOWER_LOGGER.error("error: %s", e)
        if os.environ.get("FED_UML_DEBUG", "") in ("", "0"):
            # Flower logs the exception that ends the run with its traceback: Flower's own frames,
            # nothing the user can act on. The run ends here (and its process with it), so no
            # frames are printed: the line above says what to change. FED_UML_DEBUG=1 keeps them.
            sys.tracebacklimit = 0
        raise RunStopped(str(e)) from None


class RunStopped(Exception):
    """The run stopped on a user's error, already reported as one line `error: ...`."""

    def __str__(self) -> str:
        return "stopped by the error above"
