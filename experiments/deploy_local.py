"""Loopback deployment: one SuperLink and one SuperNode per institution on 127.0.0.1.

    python -m experiments.deploy_local federated.institutions_per_modality='"sar:2,rgb:1"'

Starts `flower-superlink` (not the simulation runtime) and a `flower-supernode` per
institution with `--node-config "modality=... partition-id=... num-partitions=..."`,
runs the app with `flwr run` against them, waits for results.json and stops every
process. This is the same sequence as a real multi-machine deployment (docs/how-to/deployment.md), with
all processes on one host.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import report_user_errors
from fed_uml.federated.config import conf_dir, run_config_from_overrides
from fed_uml.federated.roles import parse_counts
from fed_uml.preflight import check_federated
from localrun.flower import FlowerRuntime

log = logging.getLogger(__name__)


def deploy(cfg: dict, overrides: list[str], workdir: Path, results_dir: Path,
           extra_run_config: dict | None = None, during_run: Callable[[FlowerRuntime], None] | None = None,
           min_institutions: int | None = None, node_configs: dict[str, dict] | None = None) -> Path:
    """Run one federated job on real SuperLink/SuperNode processes; returns results.json.

    The server waits until all institutions are connected (`min_institutions`, default all).
    `during_run(runtime)` is called in a thread while the run goes on (e.g. to kill a node);
    `node_configs` adds node-config entries per institution name (e.g. a `data-root`).
    """
    modalities = list(cfg["dataset"]["modalities"])
    counts = parse_counts(cfg["federated"]["institutions_per_modality"], modalities) or {m: 1 for m in modalities}
    total = sum(counts.values())
    run_config = run_config_from_overrides(
        list(overrides) + [f"federated.min_institutions={min_institutions or total}"],
        **{"results-dir": str(results_dir)}, **(extra_run_config or {}),
    )
    with FlowerRuntime(workdir) as rt:
        rt.start_superlink()
        for modality, n in counts.items():
            for i in range(n):
                extra = (node_configs or {}).get(f"{modality}-{i}", {})
                rt.start_supernode({"modality": modality, "partition-id": i, "num-partitions": n, **extra},
                                   name=f"supernode-{modality}-{i}")
        log.info("SuperLink on 127.0.0.1:%d with %d SuperNodes; logs in %s", rt.superlink_port, total, workdir)
        watcher = threading.Thread(target=during_run, args=(rt,), daemon=True) if during_run else None
        if watcher is not None:
            watcher.start()
        rt.run(run_config, timeout=3600)
        if watcher is not None:
            watcher.join(timeout=60)
    path = results_dir / "results.json"
    if not path.exists():
        raise RuntimeError(f"the run ended without writing {path}; see the logs in {workdir}")
    return path


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Check the settings, then deploy the federation locally (Hydra entry point)."""
    out = Path(HydraConfig.get().runtime.output_dir)
    results_dir = Path(cfg.results_dir).resolve()
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("results_dir=")]
    plain = OmegaConf.to_container(cfg, resolve=True)
    report_user_errors(lambda: check_federated(plain, results_dir, device=True))
    path = deploy(plain, overrides, out / "deployment", results_dir)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
