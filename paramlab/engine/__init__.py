"""The training engine: one loop over a stack of K >= 1 models (K = 1 is plain training).

step        train_step: the one place a training step's backward runs (then the update)
loop        fit: the loop (batches, records, divergence, live metrics), TrainResult
batches     batch sources: TensorBatches, TokenWindows, Episodes
stack       the stacking interface: stack() (MLPStack fast path or the vmap Stacked), Single (K = 1), and
            stacking_pays, the one measured rule for when stacking pays
mlp_stack   MLPStack: K paramlab MLPs as batched matmuls
update      TorchUpdate (a torch optimizer), StackedUpdate (per-family kernels over (K, ...) stacks)
supervised  train / train_stack / train_many on a tensor task
lm          train_lm / train_lm_stacked on a token task
maml        first-order MAML: the functional inner loop and the outer step
"""

from .loop import TrainResult, fit
from .stack import Single, Stacked, stack, stacking_pays
from .step import train_step
from .supervised import train, train_many, train_stack

__all__ = ["Single", "Stacked", "TrainResult", "fit", "stack", "stacking_pays", "train", "train_many", "train_stack",
           "train_step"]
