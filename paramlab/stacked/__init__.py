"""Stacked training: K paramlab MLPs of one width trained in one pass (seeds, learning rates, schemes).

model   MLPEnsemble: the K models' weights as (K, ...) tensors, a batched forward with each model's
        own multipliers
optim   StackedOptimizer: SGD / Adam / AdamW over the stacked tensors, per-model hyperparameters
train   train_ensemble (the K-model `paramlab.train.train`), train_sequential (the reference, one
        model after another), train_many and use_ensemble (stack only where it pays), step_flops
"""

from .model import MLPEnsemble
from .optim import StackedOptimizer
from .train import (ENSEMBLE_MAX_FLOPS_CPU, ENSEMBLE_MAX_FLOPS_CUDA, step_flops, train_ensemble, train_many,
                    train_sequential, use_ensemble)

__all__ = ["ENSEMBLE_MAX_FLOPS_CPU", "ENSEMBLE_MAX_FLOPS_CUDA", "MLPEnsemble", "StackedOptimizer", "step_flops",
           "train_ensemble", "train_many", "train_sequential", "use_ensemble"]
