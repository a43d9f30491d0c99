"""Stacked training of K models, as the engine provides it (`paramlab.engine`): this package keeps the
names users import.

MLPEnsemble       the MLP fast path of the one stacking interface (`paramlab.engine.mlp_stack.MLPStack`)
Stacked           the generic vmap stack (`paramlab.engine.stack`)
StackedOptimizer  the stacked update (`paramlab.engine.update.StackedUpdate`)
train_ensemble    K models trained as one stack (`paramlab.engine.supervised.train_stack`); train_sequential
                  (the reference, one model after another), train_many and use_ensemble (stack where it pays)
"""

from ..engine.mlp_stack import MLPStack as MLPEnsemble
from ..engine.stack import Stacked
from ..engine.supervised import step_flops, train_many, train_sequential, use_ensemble
from ..engine.supervised import train_stack as train_ensemble
from ..engine.update import StackedUpdate as StackedOptimizer

__all__ = ["MLPEnsemble", "Stacked", "StackedOptimizer", "step_flops", "train_ensemble", "train_many",
           "train_sequential", "use_ensemble"]
