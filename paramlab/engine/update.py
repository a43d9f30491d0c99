"""The update of a training step, for one model or a stack of K: `TorchUpdate` steps a torch optimizer,
`StackedUpdate` steps (K, ...) stacked tensors with per-model, per-tensor lr, weight decay and eps.

The hyperparameters are the ones `paramlab.optim.param_groups` gives each model (the plan's per-tensor
lr = lr * m^-c, wd = wd * m^+c, eps = eps * m^-(a+g)), so a stacked model trains like the same model
under `paramlab.optimizer` (float64: equal to 1e-10 relative after tens of steps, tests/test_stacked.py).

An optimizer family is a row of `KERNELS`: which plan family gives its hyperparameters, which state
buffers it keeps per tensor, and a kernel that updates a list of tensors sharing one (lr, wd, eps) with
torch's own implementation of that optimizer. A stacked update groups the (tensor, model) slices of the
stacks (contiguous views, no copies) by their hyperparameters and calls the kernel once per group: at
most K x (tensors) calls and in practice K x (the plan's distinct lr rows). Adam / AdamW on CPU and CUDA
run torch's fused kernel (`torch._fused_adam_`, the kernel behind `torch.optim.Adam(fused=True)`): one
pass over memory instead of Adam's ~8 elementwise passes. SGD runs `torch.optim.sgd.sgd` with torch's
default implementation choice, the arithmetic of `torch.optim.SGD`; Lion runs `paramlab.lion.lion_update_`,
the update of `paramlab.lion.Lion`. Adafactor (its factored state is not shaped like the tensor) and the
Muon hybrid (one orthogonalization per matrix) have no row. A family without a row is refused
with the fix (train its models one by one); adding a family is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.optim.adam as _adam_impl
import torch.optim.sgd as _sgd_impl

from ..lion import lion_update_
from ..optim import OPTIMIZERS, param_groups

__all__ = ["KERNELS", "StackedUpdate", "TorchUpdate", "stackable_optimizer"]

_FUSED_DEVICES = ("cpu", "cuda")


class TorchUpdate:
    """One torch optimizer (`paramlab.optimizer`'s or the user's) over one model's own parameters."""

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt

    def parameters(self) -> list[torch.Tensor]:
        return [p for g in self.opt.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.opt.step()

    def keep(self, rows: Sequence[int]) -> None:
        """A single model has one row: keeping none of it ends training, so nothing is rebuilt."""


# ----------------------------------------------------------------------------------------------
# kernels: one per optimizer family, each torch's own implementation on a list of slices


def _sgd(ps, gs, state, hp, opts, step):
    """torch.optim.sgd.sgd on the slices; momentum buffers live in the (K, ...) state stacks."""
    bufs = state["buf"]
    fresh = step == 1 or opts["momentum"] == 0  # torch starts a buffer as a copy of the first gradient
    work = [None] * len(ps) if fresh else list(bufs)
    _sgd_impl.sgd(ps, gs, work, weight_decay=hp["wd"], momentum=opts["momentum"], lr=hp["lr"], dampening=0.0,
                  nesterov=opts["nesterov"], maximize=False)
    if fresh and opts["momentum"] != 0:
        for b, w in zip(bufs, work):
            b.copy_(w)


def _lion(ps, gs, state, hp, opts, step):
    """`paramlab.lion.lion_update_` on the slices (the update of `paramlab.lion.Lion`)."""
    lion_update_(ps, gs, state["m"], hp["lr"], opts["beta1"], opts["beta2"], hp["wd"])


def _adam_kernel(decoupled: bool):
    def run(ps, gs, state, hp, opts, step):
        ms, vs = state["m"], state["v"]
        if ps[0].device.type in _FUSED_DEVICES:
            # the kernel only reads the step counter (bias corrections): one shared tensor is enough
            t = opts["step_t"](ps[0].device)
            fn = torch._fused_adamw_ if decoupled else torch._fused_adam_
            fn(ps, gs, ms, vs, [], [t] * len(ps), lr=hp["lr"], beta1=opts["beta1"], beta2=opts["beta2"],
               weight_decay=hp["wd"], eps=hp["eps"], amsgrad=False, maximize=False)
            return
        # other devices: torch's single-tensor Adam, which increments each step tensor once
        steps = [torch.tensor(float(step - 1)) for _ in ps]
        _adam_impl.adam(ps, gs, ms, vs, [], steps, foreach=False, decoupled_weight_decay=decoupled, amsgrad=False,
                        beta1=opts["beta1"], beta2=opts["beta2"], lr=hp["lr"], weight_decay=hp["wd"], eps=hp["eps"],
                        maximize=False)

    return run


@dataclass(frozen=True)
class Kernel:
    """One optimizer family of the stacked update.

    family: the plan family whose per-tensor hyperparameters it takes (`paramlab.optim.param_groups`);
    state: its per-tensor buffers, kept as (K, ...) stacks; run(params, grads, state, hp, opts, step):
    update the slices in `params` (one hp = {lr, wd, eps} for all of them) in place.
    """

    family: str
    state: tuple[str, ...]
    run: Callable


KERNELS: dict[str, Kernel] = {
    "sgd": Kernel("sgd", ("buf",), _sgd),
    "momentum": Kernel("sgd", ("buf",), _sgd),
    "adam": Kernel("adam", ("m", "v"), _adam_kernel(decoupled=False)),
    "adamw": Kernel("adam", ("m", "v"), _adam_kernel(decoupled=True)),
    "lion": Kernel("sign", ("m",), _lion),
}


def stackable_optimizer(name) -> bool:
    """True if the stacked update has a kernel for optimizer `name` (a string naming a family)."""
    return isinstance(name, str) and name.lower() in KERNELS


# ----------------------------------------------------------------------------------------------
# the stacked update


class StackedUpdate:
    """An optimizer family of `KERNELS` over (K, ...) tensors with per-model, per-tensor lr, weight decay and eps.

    `stack`: any stack with `models` (the K modules, for their param_groups), `names` and `params` (name ->
    (K, ...) leaf tensor): an `MLPStack` or a vmap `Stacked` (`paramlab.engine.stack`)."""

    def __init__(self, stack, name: str, lrs, wds, epss, eps_mode="gradient", momentum=0.0, nesterov=False,
                 betas=None):
        if not stackable_optimizer(name):
            raise ValueError(f"the stacked update has no kernel for optimizer {name!r} (it has {sorted(KERNELS)}): "
                             "train these models one by one (paramlab.train, or train_many(mode='sequential')), "
                             "or add the family to paramlab.engine.update.KERNELS")
        self.name = name.lower()
        self.kernel = KERNELS[self.name]
        fam = self.kernel.family
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        if betas is None:  # the optimizer's default, as `paramlab.optimizer` builds it (Lion: (0.9, 0.99))
            betas = OPTIMIZERS[self.name][2].get("betas", (0.9, 0.999)) if self.name in OPTIMIZERS else (0.9, 0.999)
        beta1, beta2 = (float(b) for b in betas)
        self.opts = {"momentum": float(momentum), "nesterov": bool(nesterov), "beta1": beta1, "beta2": beta2,
                     "step_t": self._step_tensor}
        self.step_count = 0
        self._t = None
        self.stack = stack
        # per (tensor name, model): the torch param group's lr / weight_decay / eps
        self.hp: dict[str, list[tuple[float, float, float]]] = {n: [] for n in stack.names}
        for m, lr, wd, eps in zip(stack.models, lrs, wds, epss):
            for g in param_groups(m, fam, lr, wd, eps=eps if fam == "adam" else None, eps_mode=eps_mode):
                for n in g["names"]:
                    self.hp[n].append((g["lr"], g["weight_decay"], g.get("eps", eps)))
        self.rows = list(range(len(stack.models)))
        self.state: dict[str, dict[str, torch.Tensor]] = {n: {} for n in stack.names}
        self._groups()

    def _step_tensor(self, device) -> torch.Tensor:
        if self._t is None or self._t.device != torch.device(device):
            self._t = torch.zeros((), dtype=torch.float32, device=device)
        self._t.fill_(self.step_count)
        return self._t

    def _groups(self) -> None:
        """Group the (tensor name, stack row) slices of the live models by their (lr, wd, eps)."""
        groups: dict[tuple, list[tuple[str, int]]] = {}
        for n in self.stack.names:
            for r, model in enumerate(self.rows):
                groups.setdefault(self.hp[n][model], []).append((n, r))
        self.groups = list(groups.items())
        self._views = None

    def parameters(self) -> list[torch.Tensor]:
        return list(self.stack.params.values())

    def zero_grad(self) -> None:
        for p in self.stack.params.values():
            p.grad = None

    def keep(self, rows: Sequence[int]) -> None:
        """Keep the optimizer state of the stack rows `rows` (the stack itself keeps its own)."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        for n in self.state:
            self.state[n] = {k: v[idx.to(v.device)] for k, v in self.state[n].items()}
        self.rows = [self.rows[i] for i in rows]
        self._groups()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every live model: the family's kernel once per hyperparameter group.

        The views of params and states stay valid across steps (updates are in place; `keep` rebuilds
        them); the gradients are new tensors every step, so only their row views are taken here.
        """
        self.step_count += 1
        params = self.stack.params
        if self._views is None or self._views[0] is not params:
            for n in self.stack.names:
                for key in self.kernel.state:
                    self.state[n].setdefault(key, torch.zeros_like(params[n]))
            rows = {n: [params[n].unbind(0)] + [self.state[n][k].unbind(0) for k in self.kernel.state]
                    for n in self.stack.names}
            per_group = [[[rows[n][j][r] for n, r in members] for j in range(1 + len(self.kernel.state))]
                         for _, members in self.groups]
            self._views = (params, per_group)
        grads = {n: params[n].grad.unbind(0) for n in self.stack.names}
        for ((lr, wd, eps), members), (ps, *states) in zip(self.groups, self._views[1]):
            gs = [grads[n][r] for n, r in members]
            self.kernel.run(ps, gs, dict(zip(self.kernel.state, states)), {"lr": lr, "wd": wd, "eps": eps},
                            self.opts, self.step_count)
