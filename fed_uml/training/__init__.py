"""Training: unpaired mini-batch loops, evaluation and seeding, shared by every method."""

from fed_uml.training.loop import TrainSettings, evaluate, evaluate_task, predict, train_unpaired
from fed_uml.training.seed import seed_everything

__all__ = ["TrainSettings", "evaluate", "evaluate_task", "predict", "seed_everything", "train_unpaired"]
