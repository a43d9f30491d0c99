"""First-order MAML on a parameterized model: the inner loop and the meta-gradient.

MAML (Finn et al. 2017, arXiv 1703.03400) meta-learns the initial parameters theta of a network so
that a few SGD steps on a new task's support set (x_s, y_s) already fit its query set (x_q, y_q):

    theta_0 = theta,   theta_{t+1} = theta_t - eta * grad L(theta_t; x_s, y_s)      t < S  (inner loop)
    meta-gradient g   = grad L(theta_S; x_q, y_q)                                        (first order)

First-order MAML (FO-MAML, Finn et al. §5.2; the variant TP4 §9 runs, arXiv 2011.14522) drops the
Jacobian d theta_S / d theta and applies the query gradient at the adapted parameters to theta
directly, averaged over a meta-batch of episodes, through any optimizer.

The outer step is the engine's step (`paramlab.engine.step.train_step`): `query_loss` is the query loss
at theta_S written as a function of theta whose backward is the identity from theta_S to theta (the
first-order approximation d theta_S / d theta ~ I), so its ordinary backward puts grad L(theta_S) into
theta's .grad; the meta-batch's episodes are accumulated and averaged there, and the optimizer steps.
`meta_train` runs these steps through the engine's loop (`paramlab.engine.loop.fit`, episodes as the
batch source, its divergence rule and live records).

The inner step size eta is per tensor and comes from the scheme: eta_w = eta * m^-c_sgd, exactly the
learning rate `paramlab.optim.optimizer(model, "sgd", eta)` would give that tensor (`inner_lrs`).
This is what makes the inner loop scale with width as the scheme says (under NTK the inner step
moves the features by O(m^-1/2), under muP by O(1)). The inner loop runs functionally
(`torch.func.functional_call` on a dict of tensors), so the model's own parameters are never
changed by it.

Why the inner loop stays separate from the engine's step: it differentiates with respect to a dict of
adapted tensors that are not the model's parameters and are replaced at every inner step (theta_{t+1}
is a new tensor), it must not touch the model's parameters or their .grad, and it has no optimizer
(the update is the plain formula above). `torch.autograd.grad` on the functional call does exactly
that; the engine's step backpropagates into parameters and steps an optimizer over them.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..divergence import DIVERGE_FACTOR
from ..optim import optimizer as make_optimizer
from ..optim import param_groups
from .batches import Episodes
from .loop import TrainResult, fit
from .stack import Single
from .step import train_step
from .update import TorchUpdate

__all__ = ["adapt", "fomaml_grads", "inner_lrs", "meta_params", "meta_train", "query_loss"]

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


class _FirstOrder(torch.autograd.Function):
    """Forward: the adapted tensor theta_S; backward: the incoming gradient, unchanged, to theta."""

    @staticmethod
    def forward(ctx, theta, adapted):
        return adapted.view_as(adapted)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def query_loss(model: nn.Module, episode, lrs: Mapping[str, float], steps: int,
               loss_fn: Loss = nn.functional.cross_entropy) -> torch.Tensor:
    """The query loss L(theta_S; x_q, y_q) of one episode (x_s, y_s, x_q, y_q) after `adapt`, as a function of
    the model's parameters theta whose gradient is FO-MAML's: grad L at theta_S."""
    xs, ys, xq, yq = episode
    adapted = adapt(model, meta_params(model), lrs, xs, ys, steps, loss_fn)
    theta = {n: _FirstOrder.apply(p, adapted[n]) for n, p in model.named_parameters() if p.requires_grad}
    return loss_fn(functional_call(model, theta, (xq,)), yq)


class _GradientOnly:
    """An update that only collects gradients: zero_grad clears the model's, step changes nothing."""

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]

    def parameters(self):
        return self.params

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        pass


def fomaml_grads(model: nn.Module, episodes, lrs: Mapping[str, float], steps: int,
                 loss_fn: Loss = nn.functional.cross_entropy) -> tuple[Params, float]:
    """First-order meta-gradient of a meta-batch and its mean query loss.

    episodes: iterable of (x_support, y_support, x_query, y_query). For each, adapt from the model's
    current parameters (`adapt`) and take grad of the query loss at the adapted parameters; returns
    name -> the mean of those gradients over the episodes (shapes of the parameters), and the mean
    query loss at the adapted parameters. The model's parameters and their .grad are left as they were
    (`meta_train` takes the same step with an optimizer).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    saved = [p.grad for _, p in named]
    episodes = list(episodes)
    if not episodes:
        raise ValueError("fomaml_grads needs at least one episode in the meta-batch")
    try:
        loss = train_step(_GradientOnly(model), (query_loss(model, ep, lrs, steps, loss_fn) for ep in episodes))[0]
        grads = {n: p.grad for n, p in named}
    finally:
        for (_, p), g in zip(named, saved):
            p.grad = g
    return grads, loss


def meta_train(model: nn.Module, episodes, lrs: Mapping[str, float], steps: int, *, meta_batch: int, prepare=None,
               optimizer: str | torch.optim.Optimizer = "sgd", lr: float = 1e-3, every: int | None = None,
               log=None, loss_fn: Loss = nn.functional.cross_entropy,
               diverge_factor: float | None = DIVERGE_FACTOR) -> list[float]:
    """First-order MAML through the engine's loop: `meta_batch` episodes per outer step (`query_loss`,
    averaged), `optimizer` over the model's parameters (`paramlab.optimizer` from the plan if named).

    episodes: (x_s, y_s, x_q, y_q) tuples (or items that `prepare` turns into them when drawn),
    len(episodes) // meta_batch outer steps. Every `every` steps
    (default: a tenth of them) `log({"meta_train/query_loss": mean of the last `every` losses}, step)`.
    Divergence is the engine's rule on the outer steps' query losses (`paramlab.divergence`; the
    reference is the first outer step's loss): training stops. Returns the outer steps' query losses
    (the last one is the non-finite or diverged loss of a diverged run).
    """
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else make_optimizer(model, optimizer, lr)
    source = Episodes(episodes, meta_batch, prepare)
    every = every or max(1, len(source) // 10)

    res = TrainResult()

    def records(step, alive):
        return [{"meta_train/query_loss": float(np.mean(res.step_losses[-every:]))}]

    fit(Single(model), TorchUpdate(opt), source,  # the loss: a generator, one episode's graph at a time
              lambda st, b: (query_loss(model, ep, lrs, steps, loss_fn) for ep in b.x), records, steps=len(source),
              every=every, record_initial=False, record_last=False, keep_losses=True, logs=[log],
              diverge_factor=diverge_factor, results=[res])
    return res.step_losses
