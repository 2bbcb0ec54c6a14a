"""The top level of the settings: the run itself, and the groups it is composed of."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from fed_uml.schema.datasets import DatasetSettings
from fed_uml.schema.federated import FederatedSettings
from fed_uml.schema.fields import nested, run_config
from fed_uml.schema.methods import MethodSettings
from fed_uml.schema.models import ModelSettings
from fed_uml.schema.training import TrainingSettings


@dataclass
class CalibrationSettings:
    """Post-hoc BN calibration (Algorithm 1): E_cal epochs over D_k in batches of B."""

    epochs: int = run_config("calibration-epochs", 1)
    """E_cal: passes over the local training data."""
    batch_size: int = 64
    """B: images per batch (BatchNorm needs two at least)."""


@dataclass
class DecisionSettings:
    """Multi-label models (dataset.task=multi_label): the decision threshold of every class.

    On its sigmoid score, that each model file records and `experiments.predict` applies
    (fed_uml/metrics.py). Single-label models take the argmax and ignore it.
    """

    threshold: float = 0.5
    """The threshold of every class (fixed), or of a class without a positive in the training
    data (tuned); strictly between 0 and 1."""
    thresholds: str = "fixed"
    """fixed: every class at `threshold`; tuned: per class, the threshold that maximises the
    class's F1 on the deployed model's own training data."""


@dataclass
class SimulationSettings:
    """How experiment scripts start Flower simulations (`flwr run --federation-config`)."""

    engine: str = "flwr"
    """flwr (the default and the engine of record: `flwr run`, Ray simulation) or inprocess (the
    same ServerApp and ClientApp through an in-process Grid, localrun/inprocess.py: no per-run
    start-up, for sweeps; one client at a time, client_cpus torch threads, no GPU setting)."""
    num_supernodes: int = 4
    """Simulated institutions (Flower SuperNodes)."""
    client_cpus: int = 1
    """CPUs each simulated institution is given."""
    client_gpus: float = 0.0
    """GPUs (a fraction shares one) each simulated institution is given."""


@dataclass
class SweepSettings:
    """Federated L sweeps (experiments/sweep.py): R = budget / L rounds of L local epochs."""

    budget: int = 200
    """R x L, the epochs of every run of the sweep."""


@dataclass
class Settings:
    """A run's settings: what conf/config.yaml composes, and what every entry point reads."""

    dataset: DatasetSettings = run_config("dataset", MISSING)
    """The data: a choice of conf/dataset/ (`dataset=eurosat`)."""
    model: ModelSettings = run_config("model", MISSING)
    """The architecture: a choice of the model group (`model=resnet18`)."""
    method: MethodSettings = run_config("method", MISSING)
    """The method: a choice of the method group (`method=unimodal`)."""
    training: TrainingSettings = nested(TrainingSettings)
    federated: FederatedSettings = nested(FederatedSettings)
    seed: int = run_config("seed", 0)
    """Seed of everything random: data, initialisation, batches, sampling."""
    device: str = "cpu"
    """torch device of the training (cpu, cuda, cuda:0, mps)."""
    num_threads: int = run_config("num-threads", 0)
    """torch intra-op threads (0: torch's default)."""
    results_dir: str | None = run_config("results-dir", "${hydra:runtime.output_dir}")
    """Directory that receives results.json (created if missing; default: Hydra's output
    directory). A folder that holds another run's outputs is refused unless resume or overwrite."""
    resume: bool = run_config("resume", False)
    """Continue a stopped run in results_dir: centralized runs from training.checkpoint_every's
    checkpoint, federated runs from the round checkpoint."""
    overwrite: bool = False
    """Centralized runs: delete the outputs of the earlier run in results_dir first."""
    calibration: CalibrationSettings = nested(CalibrationSettings)
    decision: DecisionSettings = nested(DecisionSettings)
    simulation: SimulationSettings = nested(SimulationSettings)
    sweep: SweepSettings = nested(SweepSettings)
