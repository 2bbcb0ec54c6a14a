"""The `training` settings: how every method optimises (centralized runs and each institution's rounds)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainingSettings:
    """Optimisation of every method: epochs, batches, optimiser, learning-rate schedule."""

    epochs: int = 30
    """Passes over the data (centralized runs; federated runs count rounds and local epochs)."""
    batch_size: int = 32
    """Images per modality and step."""
    lr: float = 0.001
    """Learning rate (the peak of the cosine schedule)."""
    weight_decay: float = 0.0001
    """Decoupled weight decay (AdamW) or L2 penalty (SGD)."""
    optimizer: str = "adam"
    """adam (AdamW) or sgd."""
    momentum: float = 0.9
    """SGD's momentum (optimizer=sgd only)."""
    fusion: str = "separate"
    """separate: one backbone forward per modality (BN sees one modality at a time, as after
    calibration); concat: one forward of the concatenated batch."""
    loss_weights: dict[str, float] | None = None
    """null: every modality weighs 1; or a map such as {sar: 1.0, rgb: 0.5}."""
    augment: bool = True
    """Random flips and transposes of every batch (label-preserving for overhead imagery)."""
    schedule: str = "cosine"
    """cosine: decay the learning rate to 0 over the budget (federated: over all rounds); or constant."""
    log_every: int = 5
    """Log the training losses every so many epochs (0: never)."""
    checkpoint_every: int = 1
    """A centralized run with a results folder checkpoints every so many epochs (resume=true
    continues a killed run from there, bit for bit); 0: never."""
