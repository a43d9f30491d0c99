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

**Learning-rate loops and schedulers.** The optimizer that `optimizer()` returns keeps the *base*
learning rate in every `group["lr"]` and the per-tensor factor m^-c in `group["lr_mult"]`; a step
pre-hook multiplies the two for the step and a post-hook puts the base back. So whatever sets
`group["lr"]` — nanoGPT's `for g in opt.param_groups: g["lr"] = lr`, OneCycleLR(max_lr=0.01),
CyclicLR, ReduceLROnPlateau, any LambdaLR — sets the base learning rate, and every per-tensor ratio
stays. `effective_lrs(opt)` gives the learning rate each tensor trains with. (`param_groups()` is for
other torch optimizers: its groups carry the effective lr in `group["lr"]`, which a loop that sets
`group["lr"]` would overwrite.)

**Weight decay exclusion.** `no_decay=` leaves some tensors undecayed: kinds ('bias', 'norm',
'embedding'), names or fnmatch patterns, or a preset: 'nanogpt' (tensors with fewer than 2 dims:
biases and norm gains; nanoGPT decays its tied embedding) or 'mingpt' (biases, norm parameters and
embeddings). Decayed tensors keep the scheme's wd scaling above.

**Depth rules.** A model with a depth rule (`paramlab.depth`, `plan.depth`) gets, on top of the
width factors above, the rule's factors for the tensors inside its residual blocks:

    lr_w  *= (L/L0)^-e_lr       Adam: e_lr = 1 - alpha; SGD: 1 - 2 alpha
    eps_w *= (L/L0)^-alpha      Adam, eps_mode="gradient" only (eps follows the gradient, which carries the
                                branch multiplier); eps_mode="none" keeps one fixed eps, depth included
    wd_w   unchanged            the sources keep the AdamW coefficient lambda free of depth (CompleteP
                                Table 1), so unlike width the depth lr factor is NOT divided out of wd

At depth == base_depth every factor is exactly 1.0, so the groups are bit-identical to no rule.

Tensors with equal (lr, wd, eps) share one param group (fewer groups, faster foreach kernels).
"""

from __future__ import annotations

import fnmatch
import math
from typing import Iterable, Mapping

import torch
from torch import nn

from . import wrappers as W
from .parameterize import get_plan, match_pattern
from .schemes import backward_signal_exponent, optimizer_family

EPS_MODES = ("gradient", "none")
NO_DECAY_KINDS = ("bias", "norm", "embedding")
NO_DECAY_PRESETS = {"nanogpt": ("<2d",), "mingpt": ("bias", "norm", "embedding")}


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")
    return float(value)


def _no_decay_rule(no_decay, names: Iterable[str]):
    """A predicate (TensorPlan) -> bool: True for tensors left undecayed."""
    if no_decay is None:
        return lambda t: False
    items = NO_DECAY_PRESETS.get(no_decay, None) if isinstance(no_decay, str) else None
    if items is None:
        items = (no_decay,) if isinstance(no_decay, str) else tuple(no_decay)
    names = list(names)
    for it in items:
        if not isinstance(it, str):
            raise TypeError(f"no_decay entries are kinds, names or patterns (str), got {it!r}")
        if it in NO_DECAY_KINDS or it == "<2d":
            continue
        if not any(n == it or fnmatch.fnmatchcase(n, it) for n in names):
            raise ValueError(f"no_decay={no_decay!r}: {it!r} is neither a preset ({', '.join(NO_DECAY_PRESETS)}), "
                             f"a kind ({', '.join(NO_DECAY_KINDS)}), nor a name or pattern of the model's tensors")
    kinds = {it for it in items if it in NO_DECAY_KINDS}
    pats = {it: True for it in items if it not in NO_DECAY_KINDS and it != "<2d"}
    small = "<2d" in items
    return lambda t: t.kind in kinds or (small and len(t.shape) < 2) or match_pattern(t.name, pats) is not None


def param_groups(
    model: nn.Module,
    optimizer: str = "sgd",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    eps: float | None = None,
    eps_mode: str = "gradient",
    layer_lr: Mapping[str, float] | None = None,
    no_decay=None,
) -> list[dict]:
    """Param groups with per-tensor lr (and weight_decay, eps) from the model's plan.

    Each group's `lr` is the *effective* lr (base lr times `lr_mult`, for handing to any torch
    optimizer); `lr_mult` is m^-c times the `layer_lr` constant, `names` the parameter names in it.
    `layer_lr` maps parameter names or fnmatch patterns to width-independent lr constants (Everett et
    al.'s per-layer gamma_l; exact names win over patterns), multiplied into that tensor's lr.
    `no_decay`: see the module docstring. The model may be wrapped (DDP, FSDP1 with use_orig_params, compile).
    """
    fam = optimizer_family(optimizer)
    lr = _check_positive("lr", lr)
    weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
    plan = get_plan(model)
    W.check_not_flattened(model)
    dplan = plan.depth
    undecayed = _no_decay_rule(no_decay, [t.name for t in plan])
    g_back = backward_signal_exponent(plan.scheme["output"].invariants()[0])  # at init: the readout's std
    groups: dict[tuple, dict] = {}
    for name, p in W.named_parameters(model):
        if not p.requires_grad:
            continue
        if name not in plan:
            raise ValueError(f"parameter {name!r} is not in the model's plan: was it added after parameterize()?")
        t = plan[name]
        const = match_pattern(name, layer_lr)
        mult = t.lr_mult(fam) * (1.0 if const is None else _check_positive(f"layer_lr[{name!r}]", const))
        d_lr, d_eps, d_wd = dplan.factors(name, fam) if dplan is not None else (1.0, 1.0, 1.0)
        wd = 0.0 if (not weight_decay or undecayed(t)) else weight_decay / mult * d_wd  # wd: no depth lr factor
        mult = mult * d_lr
        key = [mult, wd]
        if fam == "adam" and eps is not None:
            g = g_back if t.role in ("input", "hidden", "vector") else 0.0
            key.append(eps * t.m ** (-(t.a + g)) * d_eps if eps_mode == "gradient" else eps)
        key = tuple(key)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": lr * mult, "lr_mult": mult, "weight_decay": key[1]}
            if len(key) > 2:
                groups[key]["eps"] = key[2]
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


class ApplyLrMult:
    """Step pre-/post-hooks: group lr -> lr * lr_mult for the step, then back to the base lr.

    If a step raised between the two, the next pre-hook first puts the saved base values back.
    """

    def __init__(self):
        self.saved = None

    def pre(self, opt, args, kwargs):
        self._restore(opt)
        self.saved = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"] = g["lr"] * g.get("lr_mult", 1.0)
        return None

    def post(self, opt, args, kwargs):
        self._restore(opt)
        return None

    def _restore(self, opt):
        if self.saved is not None:
            for g, base in zip(opt.param_groups, self.saved):
                g["lr"] = base
            self.saved = None


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
    no_decay=None,
    **kwargs,
) -> torch.optim.Optimizer:
    """A torch optimizer ('sgd', 'adam' or 'adamw') with per-tensor hyperparameters from the plan.

    `lr`, `weight_decay` and `eps` are the values at the base width; see the module docstring for
    how they scale, and for why `group["lr"]` holds the base lr (schedulers and manual loops keep the
    per-tensor ratios). `layer_lr`: name/pattern -> width-independent lr constant (see `param_groups`).
    `no_decay`: tensors left undecayed (kinds, names/patterns, 'nanogpt' or 'mingpt'). Extra kwargs go
    to the torch optimizer (e.g. foreach, fused). The model may be wrapped (DDP, FSDP1, compile).
    """
    key = name.lower()
    fam = optimizer_family(key)
    if fam == "sgd":
        groups = param_groups(model, "sgd", lr, weight_decay, layer_lr=layer_lr, no_decay=no_decay)
    else:
        _check_positive("eps", eps, allow_zero=True)
        groups = param_groups(model, "adam", lr, weight_decay, eps=eps, eps_mode=eps_mode, layer_lr=layer_lr,
                              no_decay=no_decay)
    for g in groups:
        g["lr"] = lr  # the base lr: ApplyLrMult multiplies in lr_mult at each step
    if fam == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)
    else:
        cls = torch.optim.AdamW if key == "adamw" else torch.optim.Adam
        opt = cls(groups, lr=lr, betas=betas, eps=eps, **kwargs)
    hooks = ApplyLrMult()
    opt.register_step_pre_hook(hooks.pre)
    opt.register_step_post_hook(hooks.post)
    opt.paramlab_lr_mult = True  # group["lr"] is the base lr (see effective_lrs)
    return opt


def effective_lrs(opt: torch.optim.Optimizer) -> dict[str, float]:
    """name -> the learning rate each tensor trains with at the next step (groups need `names`)."""
    scaled = getattr(opt, "paramlab_lr_mult", False)
    out = {}
    for g in opt.param_groups:
        lr = float(g["lr"]) * (g.get("lr_mult", 1.0) if scaled else 1.0)
        for n in g.get("names", ()):
            out[n] = lr
    return out
