"""Lion (EvoLved Sign Momentum): the sign-update optimizer of Chen et al. 2023, "Symbolic Discovery of
Optimization Algorithms" (arXiv 2302.06675, Algorithm 2). torch ships none; this is the paper's update:

    c_t     = beta1 * m_{t-1} + (1 - beta1) * g_t          interpolated momentum (the update direction)
    theta_t = theta_{t-1} - lr * (sign(c_t) + wd * theta_{t-1})     decoupled weight decay, as AdamW
    m_t     = beta2 * m_{t-1} + (1 - beta2) * g_t          the momentum actually kept

Every coordinate moves by exactly lr (plus the decay): the size of Adam's normalized step at eps = 0,
which is why its width exponents are Adam's (`paramlab.schemes`, family 'sign'). sign(0) = 0.
Paper defaults: betas (0.9, 0.99); lr 3-10x smaller and wd 3-10x larger than AdamW's.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Lion", "lion_update_"]


class Lion(torch.optim.Optimizer):
    """Lion over any params / param groups (lr, betas, weight_decay per group)."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 maximize: bool = False):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"Lion: lr must be a positive finite number, got {lr!r}")
        if len(tuple(betas)) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: betas must be two numbers in [0, 1), got {betas!r}")
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"Lion: weight_decay must be a finite number >= 0, got {weight_decay!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            grads = [-p.grad if group["maximize"] else p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            lion_update_(params, grads, [self.state[p]["exp_avg"] for p in params], group["lr"], beta1, beta2,
                         group["weight_decay"])
        return loss


@torch.no_grad()
def lion_update_(params, grads, exp_avgs, lr: float, beta1: float, beta2: float, weight_decay: float) -> None:
    """One Lion step (the module docstring's three lines) on lists of tensors, in place: the update of
    `Lion.step` and of the stacked engine (`paramlab.engine.update`), which passes (model, tensor) slices."""
    for p, g, m in zip(params, grads, exp_avgs):
        update = (beta1 * m + (1 - beta1) * g).sign_()  # c_t, signed
        if weight_decay:
            p.mul_(1 - lr * weight_decay)
        p.add_(update, alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1 - beta2)
