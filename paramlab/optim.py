"""Optimizers whose per-tensor learning rate, weight decay and Adam eps come from the model's plan.

For a tensor with plan (m, a, c) and base values lr, wd, eps:

    lr_w  = lr * m^-c                 c = c_sgd for SGD, c_adam for Adam / AdamW
    wd_w  = wd * m^+c                 so the per-step decay lr_w * wd_w = lr * wd is width-independent
                                      (the convention of mup's MuSGD / MuAdam, TP5 App. B)
    eps_w = eps * m^-(a + g_role)     Adam only, eps_mode="gradient" (default)

Adam's eps breaks the abc symmetry unless it moves with the gradient (Everett et al. 2024, §4):
under w -> m^t w the gradient scales like m^-t, so an eps that scales like the tensor's forward
multiplier m^-a keeps equivalent schemes (muP and MF) identical. paramlab also divides by the
predicted width scaling of the effective gradient, m^-g_role, with g = (a+b) of the readout for
input, hidden and vector tensors (the backward signal is as small as the readout's effective init)
and 0 for the readout and scalars, so eps stays the same fraction of |grad| at every width instead
of dominating wide layers. `eps_mode="none"` keeps eps fixed, as `mup.MuAdam` does.

Tensors with equal (lr, wd, eps) share one param group (fewer groups, faster foreach kernels).
LR schedulers keep working: they scale each group's lr relative to its initial lr.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from .parameterize import get_plan, match_pattern
from .schemes import optimizer_family

EPS_MODES = ("gradient", "none")


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")
    return float(value)


def param_groups(
    model: nn.Module,
    optimizer: str = "sgd",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    eps: float | None = None,
    eps_mode: str = "gradient",
    layer_lr: Mapping[str, float] | None = None,
) -> list[dict]:
    """Param groups with per-tensor lr (and weight_decay, eps) from the model's plan.

    `layer_lr` maps parameter names or fnmatch patterns to width-independent lr constants (Everett et
    al.'s per-layer gamma_l; exact names win over patterns), multiplied into that tensor's lr.
    Each group also carries `lr_mult` (m^-c times the constant) and `names` (the parameter names in it).
    """
    fam = optimizer_family(optimizer)
    lr = _check_positive("lr", lr)
    weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
    plan = get_plan(model)
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper prefixes names with _orig_mod.
    g_back = plan.scheme["output"].a + plan.scheme["output"].b  # exponent of the backward signal
    groups: dict[tuple, dict] = {}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if name not in plan:
            raise ValueError(f"parameter {name!r} is not in the model's plan: was it added after parameterize()?")
        t = plan[name]
        const = match_pattern(name, layer_lr)
        mult = t.lr_mult(fam) * (1.0 if const is None else _check_positive(f"layer_lr[{name!r}]", const))
        key = [mult, weight_decay / mult if weight_decay else 0.0]
        if fam == "adam" and eps is not None:
            g = g_back if t.role in ("input", "hidden", "vector") else 0.0
            key.append(eps * t.m ** (-(t.a + g)) if eps_mode == "gradient" else eps)
        key = tuple(key)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": lr * mult, "lr_mult": mult, "weight_decay": key[1]}
            if len(key) > 2:
                groups[key]["eps"] = key[2]
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 1e-3,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    eps_mode: str = "gradient",
    layer_lr: Mapping[str, float] | None = None,
    **kwargs,
) -> torch.optim.Optimizer:
    """A torch optimizer ('sgd', 'adam' or 'adamw') with per-tensor hyperparameters from the plan.

    `lr`, `weight_decay` and `eps` are the values at the base width; see the module docstring for
    how they scale. `layer_lr`: name/pattern -> width-independent lr constant (see `param_groups`). Extra kwargs go to the torch optimizer (e.g. foreach, fused).
    """
    key = name.lower()
    fam = optimizer_family(key)
    if fam == "sgd":
        groups = param_groups(model, "sgd", lr, weight_decay, layer_lr=layer_lr)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)
    _check_positive("eps", eps, allow_zero=True)
    groups = param_groups(model, "adam", lr, weight_decay, eps=eps, eps_mode=eps_mode, layer_lr=layer_lr)
    cls = torch.optim.AdamW if key == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, betas=betas, eps=eps, **kwargs)
