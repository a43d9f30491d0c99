"""First-order MAML on a parameterized model: the inner loop and the meta-gradient.

MAML (Finn et al. 2017, arXiv 1703.03400) meta-learns the initial parameters theta of a network so
that a few SGD steps on a new task's support set (x_s, y_s) already fit its query set (x_q, y_q):

    theta_0 = theta,   theta_{t+1} = theta_t - eta * grad L(theta_t; x_s, y_s)      t < S  (inner loop)
    meta-gradient g   = grad L(theta_S; x_q, y_q)                                        (first order)

First-order MAML (FO-MAML, Finn et al. §5.2; the variant TP4 §9 runs, arXiv 2011.14522) drops the
Jacobian d theta_S / d theta and applies the query gradient at the adapted parameters to theta
directly, averaged over a meta-batch of episodes, through any optimizer.

The inner step size eta is per tensor and comes from the scheme: eta_w = eta * m^-c_sgd, exactly the
learning rate `paramlab.optim.optimizer(model, "sgd", eta)` would give that tensor (`inner_lrs`).
This is what makes the inner loop scale with width as the scheme says (under NTK the inner step
moves the features by O(m^-1/2), under muP by O(1)). The inner loop runs functionally
(`torch.func.functional_call` on a dict of tensors), so the model's own parameters are never
changed by it.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from .optim import param_groups

__all__ = ["adapt", "fomaml_grads", "inner_lrs", "meta_params"]

Params = dict[str, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def inner_lrs(model: nn.Module, lr: float) -> dict[str, float]:
    """name -> inner-loop SGD step size of every trainable tensor: lr * m^-c_sgd (`optim.param_groups`)."""
    return {n: g["lr"] for g in param_groups(model, "sgd", lr) for n in g["names"]}


def meta_params(model: nn.Module) -> Params:
    """The model's trainable tensors, detached (the inner loop's theta_0; shares storage, never written)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def adapt(model: nn.Module, params: Mapping[str, torch.Tensor], lrs: Mapping[str, float], x: torch.Tensor,
          y: torch.Tensor, steps: int, loss_fn: Loss = nn.functional.cross_entropy) -> Params:
    """theta_S after `steps` SGD steps on loss_fn(model(x), y), from `params`, step size lrs[name].

    Functional: `params` and the model's parameters are left as they are; the result is detached.
    """
    if steps < 0:
        raise ValueError(f"steps (inner SGD steps) must be >= 0, got {steps}")
    missing = sorted(set(params) - set(lrs))
    if missing:
        raise ValueError(f"no inner lr for {missing}: build lrs with inner_lrs(model, lr)")
    theta = {n: p.detach() for n, p in params.items()}
    for _ in range(steps):
        theta = {n: p.requires_grad_(True) for n, p in ((n, p.clone()) for n, p in theta.items())}
        loss = loss_fn(functional_call(model, theta, (x,)), y)
        grads = torch.autograd.grad(loss, list(theta.values()))
        theta = {n: (p - lrs[n] * g).detach() for (n, p), g in zip(theta.items(), grads)}
    return theta


def fomaml_grads(model: nn.Module, episodes, lrs: Mapping[str, float], steps: int,
                 loss_fn: Loss = nn.functional.cross_entropy) -> tuple[Params, float]:
    """First-order meta-gradient of a meta-batch and its mean query loss.

    episodes: iterable of (x_support, y_support, x_query, y_query). For each, adapt from the model's
    current parameters (`adapt`) and take grad of the query loss at the adapted parameters; returns
    name -> the mean of those gradients over the episodes (shapes of the parameters), and the mean
    query loss at the adapted parameters. Set them as `.grad` and step any optimizer for the outer step.
    """
    theta0 = meta_params(model)
    total: Params = {n: torch.zeros_like(p) for n, p in theta0.items()}
    losses, n_ep = 0.0, 0
    for xs, ys, xq, yq in episodes:
        theta = {n: p.requires_grad_(True) for n, p in adapt(model, theta0, lrs, xs, ys, steps, loss_fn).items()}
        loss = loss_fn(functional_call(model, theta, (xq,)), yq)
        for (n, _), g in zip(theta.items(), torch.autograd.grad(loss, list(theta.values()))):
            total[n] += g
        losses += float(loss.detach())
        n_ep += 1
    if n_ep == 0:
        raise ValueError("fomaml_grads needs at least one episode in the meta-batch")
    return {n: g / n_ep for n, g in total.items()}, losses / n_ep
