"""The training step: the one place in paramlab that runs a training step's backward.

    update.zero_grad()
    L = (L_1, ..., L_K)            one loss per model of the stack (K = 1: plain training)
    backward of sum_k L_k          the models share no tensor, so model k's gradient is dL_k / d theta_k
    update.step()                  `paramlab.engine.update`: a torch optimizer or the stacked kernels

Every training path calls `train_step`: the engine's loop (`paramlab.train`, stacked training, the LM),
`paramlab.train.train_step` (the coordinate check), the one-step response, the depth coordinate check
and MAML's outer step. MAML's outer step hands in one loss per episode of its meta-batch: each is
backpropagated in turn (gradient accumulation, one graph alive at a time) and the accumulated
gradient is divided by their number, the mean of the episodes' gradients.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

Stop = Callable[[list], bool]


def train_step(update, losses: torch.Tensor | Iterable[torch.Tensor], stop: Stop | None = None) -> list[float]:
    """Backward and update; returns the losses of this forward pass as floats, one per model.

    `losses`: a tensor (K,) or a scalar (K = 1), whose forward gives this update; or an iterable of
    such tensors (a meta-batch: accumulated, then averaged). `update`: zero_grad() / step() /
    parameters() (`paramlab.engine.update`). The grads are zeroed before the backward. When
    `stop(values)` is true nothing is updated: for a tensor before its backward (the caller drops
    diverged models and calls again), for an iterable after the accumulation. The caller decides
    what divergence means.
    """
    update.zero_grad()
    one = isinstance(losses, torch.Tensor)
    total, n = None, 0
    for part in [losses] if one else losses:
        values = part.detach().reshape(-1).tolist()
        if one and stop is not None and stop(values):
            return values
        part.sum().backward()
        total = values if total is None else [a + b for a, b in zip(total, values)]
        n += 1
    if n == 0:
        raise ValueError("a training step needs at least one loss")
    if not one:
        values = [t / n for t in total]
        if stop is not None and stop(values):
            return values
        if n > 1:
            with torch.no_grad():
                for p in update.parameters():
                    if p.grad is not None:
                        p.grad.div_(n)
    update.step()
    return values
