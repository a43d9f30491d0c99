"""The plan guard: a parameterized model stepped by an optimizer that ignores its plan warns once.

A scheme is half init and multipliers, half per-tensor learning rates (lr * m^-c). An optimizer built
without the plan — `torch.optim.AdamW(model.parameters(), lr)`, nanoGPT's `configure_optimizers` (plain
AdamW over its own decay / no-decay groups) — trains every tensor at one lr, which under muP at m = 4
gives the hidden matrices 4x their lr: the model looks parameterized and is not, silently.

`watch(model, plan)` (called by `paramlab.parameterize`) registers the model's tensors. A global torch
optimizer step pre-hook then checks each optimizer once, at its first step: over the parameterized
tensors it steps, the group lr divided by the plan's lr factor for the optimizer's family
(`Plan.lr_mult`) must be one number (one base lr). `paramlab.optimizer`'s optimizers and torch
optimizers over `paramlab.param_groups` pass; an optimizer whose family paramlab cannot tell warns
too, since its plan cannot be checked. Only the lr is checked (weight decay and eps follow it in
`paramlab.optim`). Off switches: `paramlab.guard.enable(False)`, the environment variable
`PARAMLAB_PLAN_GUARD=0`, or `opt.paramlab_plan_ok = True` on one optimizer (you set its lrs yourself).
"""

from __future__ import annotations

import os
import warnings
import weakref

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.weak import WeakIdKeyDictionary

from . import wrappers as W
from .schemes import get_family

__all__ = ["enable", "watch", "PlanBlindOptimizerWarning"]

_TENSORS = WeakIdKeyDictionary()  # parameter -> (its name, the Plan it belongs to)
_CHECKED: "weakref.WeakSet" = weakref.WeakSet()  # optimizers already checked
_STATE = {"enabled": os.environ.get("PARAMLAB_PLAN_GUARD", "1") != "0", "handle": None}
_TOL = 1e-9


class PlanBlindOptimizerWarning(UserWarning):
    """An optimizer trains a parameterized model without its per-tensor learning rates."""


def enable(on: bool = True) -> None:
    """Turn the guard on or off for the whole process (PARAMLAB_PLAN_GUARD=0 starts it off)."""
    _STATE["enabled"] = bool(on)


def watch(model, plan) -> None:
    """Register a parameterized model's tensors with the guard and make sure the hook is installed."""
    for name, p in W.named_parameters(model):
        if name in plan:
            _TENSORS[p] = (name, plan)
    if _STATE["handle"] is None:
        _STATE["handle"] = register_optimizer_step_pre_hook(_check)


def _check(opt, args, kwargs) -> None:
    if opt in _CHECKED:
        return
    _CHECKED.add(opt)
    if not _STATE["enabled"] or getattr(opt, "paramlab_lr_mult", False) or getattr(opt, "paramlab_plan_ok", False):
        return
    problem = plan_blind(opt)
    if problem:
        warnings.warn(problem, PlanBlindOptimizerWarning, stacklevel=3)


def plan_blind(opt) -> str | None:
    """Why `opt` ignores the plan of a model it trains (a message naming the fix), or None."""
    by_plan: dict[int, tuple] = {}
    for g in opt.param_groups:
        for p in g["params"]:
            hit = _TENSORS.get(p)
            if hit is not None:
                by_plan.setdefault(id(hit[1]), (hit[1], []))[1].append((hit[0], float(g["lr"])))
    if not by_plan:
        return None
    fix = ("build it with paramlab.optimizer(model, name, lr=...) (SGD, Adam(W), Lion, Adafactor, Muon, mixes, "
           "impl=<your class>), or hand paramlab.param_groups(model, name, lr=...) to your optimizer; "
           "silence with opt.paramlab_plan_ok = True or paramlab.guard.enable(False) (docs/optimizers.md)")
    try:
        fam = get_family(opt)
    except ValueError:
        fam = None
    for plan, items in by_plan.values():
        if fam is None:
            if any(len({round(plan.lr_mult(n, f) or 1.0, 12) for n, _ in items}) > 1 for f in ("sgd", "adam")):
                return (f"a {type(opt).__name__} optimizer is training a paramlab-parameterized model (scheme "
                        f"{plan.scheme.name}) and paramlab cannot tell its width-scaling family, so its per-tensor "
                        f"learning rates cannot be checked: {fix}")
            continue
        base = [(n, lr, lr / m) for n, lr in items for m in [plan.lr_mult(n, fam)] if m]
        if not base:
            continue
        lo, hi = min(base, key=lambda r: r[2]), max(base, key=lambda r: r[2])
        if hi[2] > lo[2] * (1 + _TOL):
            want = lo[1] * plan.lr_mult(hi[0], fam) / plan.lr_mult(lo[0], fam)
            return (f"{type(opt).__name__} ignores the paramlab plan of the model it trains (scheme {plan.scheme.name}, "
                    f"family {fam.name}): {hi[0]!r} trains at lr {hi[1]:.4g} beside {lo[0]!r} at {lo[1]:.4g}, where "
                    f"the plan gives it {want:.4g} (lr * m^-c per tensor). Plain torch optimizers over "
                    f"model.parameters() or your own groups (nanoGPT's configure_optimizers) train every tensor at "
                    f"one lr: {fix}")
    return None
