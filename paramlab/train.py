"""Training one model: `train` (the engine's loop at K = 1, `paramlab.engine.supervised`) and `train_step`
(one optimizer step through the engine's step, for loops written by hand, e.g. the coordinate check).

Knows nothing about wandb: pass a `log(metrics, step)` callable (e.g. `tracking.Run.log`), or let the
caller route the points with `paramlab.live.sending_to`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .engine.loop import TrainResult
from .engine.step import train_step as _step
from .engine.supervised import Hook, eval_subset, evaluate, train
from .engine.update import TorchUpdate
from .losses import loss_fn

__all__ = ["Hook", "TrainResult", "eval_subset", "evaluate", "load_checkpoint", "save_checkpoint", "seed_everything",
           "train", "train_step"]


def train_step(model: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, loss: str | Callable = "mse", n_classes: int | None = None,
               stop: Callable[[float], bool] | None = None) -> float:
    """One optimizer step on the batch (x, y): zero the grads, forward, loss, backward, step.

    `loss` is a `paramlab.losses` name or a callable(out, y) -> scalar. Returns the loss of this
    forward pass (the one that gives the update). A non-finite loss is returned without a backward
    pass or an update, and so is one for which `stop(loss)` is true: the caller decides what
    divergence means.
    """
    out = model(x)
    value = loss(out, y) if callable(loss) else loss_fn(loss, out, y, n_classes)

    def halt(values):
        return not math.isfinite(values[0]) or (stop is not None and stop(values[0]))

    return _step(TorchUpdate(opt), value, stop=halt)[0]


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (paramlab's own draws use explicit generators)."""
    torch.manual_seed(int(seed))
