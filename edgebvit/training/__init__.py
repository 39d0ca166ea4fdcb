"""The training stage: a RunConfig in, a run directory out (docs/architecture.md).

| module       | job                                                                  |
|--------------|----------------------------------------------------------------------|
| config.py    | `RunConfig` and its sections; parsing and validating every source    |
| recipes.py   | the papers' recipes as partial configs (`--recipe NAME`)             |
| data.py      | loaders (idx, CIFAR, .npz, image folders), `normalize`, tf.data      |
| augment.py   | training-time augmentation (tf.data only, never in the model)        |
| distill.py   | the frozen teacher and the distillation losses                       |
| rundir.py    | the run directory: create / reopen it, atomic writers                |
| trainer.py   | `Trainer`, the Keras model `fit` trains (loss terms, steps)          |
| optim.py     | optimizers (Adam, AdamW, Bop) and learning-rate schedules            |
| callbacks.py | per-epoch loss weights and stage, logging, best-model saving         |
| loop.py      | `train()`, which puts the above together                             |

Model surgery (Bop's STE mask, the two-stage kernel switch, binary-layer walks) lives beside the
quantizers in `edgebvit.models.layers.quantizers`; training calls it, never rewrites layers itself.
"""
from edgebvit.training.callbacks import (BestModelSaver, EpochPlan, FlipRatioLogger, LearningRateLogger,
                                         LossSchedule, epoch_plan)
from edgebvit.training.config import RunConfig
from edgebvit.training.loop import TrainResult, build_model, make_strategy, train
from edgebvit.training.optim import current_learning_rate, make_optimizer, make_schedule, optimizer_steps
from edgebvit.training.recipes import RECIPES, get_recipe
from edgebvit.training.trainer import Trainer

__all__ = [
    "BestModelSaver", "EpochPlan", "FlipRatioLogger", "LearningRateLogger", "LossSchedule", "RECIPES", "RunConfig",
    "TrainResult", "Trainer", "build_model", "current_learning_rate", "epoch_plan", "get_recipe", "make_optimizer",
    "make_schedule", "make_strategy", "optimizer_steps", "train",
]
