"""Prepare the data store of a real data set: `python -m experiments.prepare dataset=bigearthnet [overrides]`.

Decodes every patch of every split of each modality of `dataset.modalities` once, at
`dataset.image_size`, into its store (`fed_uml/data/store`; `dataset.store.dir`, else
$FED_UML_STORE, else ~/.cache/fed-uml/store), in parallel over `dataset.store.workers`
processes (0: one per core), with a progress bar and its ETA. Interrupted, it resumes where it
stopped; run again on a complete store, it verifies every block's SHA-256 (and prepares again
any corrupt one). Runs (`experiments.run`, each institution) then stream from the store; they
also prepare it on first use, so this step is optional. Prints one line per modality.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.cli import debug_requested, report_user_errors
from fed_uml.data.catalog import readers_of
from fed_uml.data.store.assemble import prepare_stores
from fed_uml.federated.config import conf_dir

DEBUG = debug_requested()


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Prepare (or verify) the data stores of the configured data set (Hydra entry point)."""
    logging.getLogger("fed_uml").setLevel(logging.INFO)
    dataset = OmegaConf.to_container(cfg, resolve=True)["dataset"]
    for row in report_user_errors(lambda: prepare_stores(dataset, readers_of(dataset.get("name"))), DEBUG):
        print(f"{dataset['name']} {row['modality']}: {row['rows']} patches {tuple(row['shape'])} {row['dtype']}, "
              f"{row['bytes'] / 2**30:.2f} GiB, {row['bad_rows']} bad file(s) -> {row['store']}")


if __name__ == "__main__":
    main()
