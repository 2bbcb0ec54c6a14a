"""Centralized runner: `python -m experiments.run method=uml dataset=synthetic seed=0`.

Writes results.json into `results_dir` (by default Hydra's output directory).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from fed_uml.centralized import run_centralized
from fed_uml.federated.config import conf_dir
from fed_uml.results import TASK_METRICS


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    results_dir = cfg.results_dir
    plain = OmegaConf.to_container(cfg, resolve=True)
    results = run_centralized(plain, results_dir)
    metric = results["primary_metric"]
    for k, m in results["modalities"].items():
        print(f"{k}: " + ", ".join(f"{name} {m[name]:.4f}" for name in TASK_METRICS[results["task"]]))
    print(f"mean {metric} {results[f'mean_{metric}']:.4f}; results in {results_dir}/results.json")
    return results[f"mean_{metric}"]


if __name__ == "__main__":
    main()
