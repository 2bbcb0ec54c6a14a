"""Centralized runner: `python -m experiments.run method=uml dataset=synthetic seed=0`.

Writes results.json into `results_dir` (by default Hydra's output directory). A results_dir
that holds another run's outputs is refused unless `resume=true` (continue a killed run from
its checkpoint) or `overwrite=true`. A user's error (a setting, a file) ends the run as one
line `error: <message>` with exit status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.cli import debug_requested, report_user_errors
from fed_uml.centralized import run_centralized
from fed_uml.federated.config import conf_dir
from fed_uml.results import TASK_METRICS

DEBUG = False


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run one centralized experiment (Hydra entry point); returns the primary metric for sweepers."""
    results_dir = cfg.results_dir
    plain = OmegaConf.to_container(cfg, resolve=True)
    results = report_user_errors(lambda: run_centralized(plain, results_dir), debug=DEBUG)
    metric = results["primary_metric"]
    for k, m in results["modalities"].items():
        print(f"{k}: " + ", ".join(f"{name} {m[name]:.4f}" for name in TASK_METRICS[results["task"]]))
    print(f"mean {metric} {results[f'mean_{metric}']:.4f}; results in {results_dir}/results.json")
    return results[f"mean_{metric}"]


if __name__ == "__main__":
    DEBUG = debug_requested()
    main()
