"""Centralized runner: `python -m experiments.run method=uml dataset=synthetic seed=0`.

Writes results.json into `results_dir` (by default Hydra's output directory).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from fed_uml.centralized import run_centralized


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    results_dir = cfg.results_dir
    plain = OmegaConf.to_container(cfg, resolve=True)
    results = run_centralized(plain, results_dir)
    print(f"mean accuracy {results['mean_accuracy']:.4f}; results in {results_dir}/results.json")
    return results["mean_accuracy"]


if __name__ == "__main__":
    main()
