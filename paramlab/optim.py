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
import warnings
from typing import Iterable, Mapping

import torch
from torch import nn

from . import wrappers as W
from .combined import Combined
from .lion import Lion
from .parameterize import get_plan, match_pattern
from .schemes import MUON_ADJUST, OptimizerFamily, backward_signal_exponent, get_family

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


def _eps_values(fam: OptimizerFamily, eps) -> tuple:
    """The family's eps options as a tuple in `fam.eps` order (None entries stay None)."""
    if not fam.eps or eps is None:
        return ()
    vals = tuple(eps) if isinstance(eps, (tuple, list)) else (eps,)
    if len(vals) != len(fam.eps):
        names = ", ".join(k for k, _ in fam.eps)
        raise ValueError(f"eps for the {fam.name} family is ({names}): {len(fam.eps)} value(s), got {eps!r}")
    for (k, _), v in zip(fam.eps, vals):
        if v is not None:
            _check_positive(f"eps ({k})", v, allow_zero=True)
    return vals


def tensor_hparams(
    model: nn.Module,
    optimizer="sgd",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    eps=None,
    eps_mode: str = "gradient",
    layer_lr: Mapping[str, float] | None = None,
    no_decay=None,
    decoupled_wd: bool = False,
    families: Mapping[str, str] | None = None,
    names=None,
) -> dict[str, dict]:
    """name -> the hyperparameters one tensor trains with: the single source of every per-tensor rule.

    Each entry: `family` (its optimizer family), `lr_mult` (m^-c of the family times the `layer_lr`
    constant and the depth factor), `lr` (= lr * lr_mult), `weight_decay` and `eps` (None, a number,
    or a tuple for Adafactor's (eps1, eps2)). `optimizer` names the family of every tensor;
    `families` (name -> family) overrides it per tensor (mixes); `names` keeps only those tensors.
    Frozen tensors are left out.

        lr_w  = lr * m^-c_family * layer_lr * depth_lr
        wd_w  = wd * m^+c_family * depth_wd      (decoupled_wd=True: wd * depth_wd, mup's and nanoGPT-mup's name)
        eps_w = eps * m^-(a + g) * depth_eps     'gradient' eps (Adam's, Adafactor's eps1), eps_mode="gradient"
                eps * m^-b                       'param' eps (Adafactor's eps2: the floor of RMS(w))
                eps                              'fixed' eps (Muon's Newton-Schulz guard), or eps_mode="none"
    """
    lr = _check_positive("lr", lr)
    weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
    W.check_not_flattened(model)  # first: flattening also changes the planned shapes, which get_plan refuses less clearly
    plan = get_plan(model)
    dplan = plan.depth
    undecayed = _no_decay_rule(no_decay, [t.name for t in plan])
    g_back = backward_signal_exponent(plan.scheme["output"].invariants()[0])  # at init: the readout's std
    default = get_family(optimizer)
    out = {}
    for name, p in W.named_parameters(model):
        if not p.requires_grad or (names is not None and name not in names):
            continue
        if name not in plan:
            raise ValueError(f"parameter {name!r} is not in the model's plan: was it added after parameterize()?")
        t = plan[name]
        fam = get_family(families[name]) if families and name in families else default
        mult = plan.lr_mult(name, fam)
        if mult is None:
            raise ValueError(f"the {fam.name} family cannot train {name!r} (role {t.role}, shape {tuple(t.shape)}): "
                             "spectral optimizers (Muon) take 2-D matrices; give it to AdamW, e.g. "
                             "paramlab.optimizer(model, {'hidden': 'muon', '*': 'adamw'}, ...)")
        const = match_pattern(name, layer_lr)
        mult *= 1.0 if const is None else _check_positive(f"layer_lr[{name!r}]", const)
        d_lr, d_eps, d_wd = dplan.factors(name, fam.name) if dplan is not None else (1.0, 1.0, 1.0)
        # wd: no depth lr factor; width's is divided out (per-step decay lr_w * wd_w = lr * wd) unless decoupled
        wd = 0.0 if (not weight_decay or undecayed(t)) else weight_decay / (1.0 if decoupled_wd else mult) * d_wd
        mult = mult * d_lr
        scale = {"gradient": t.m ** (-(t.a + (g_back if t.role in ("input", "hidden", "vector") else 0.0))) * d_eps,
                 "param": t.m ** (-t.b), "fixed": 1.0}
        epss = tuple(None if v is None else (v * scale[follows] if eps_mode == "gradient" else v)
                     for (_, follows), v in zip(fam.eps, _eps_values(fam, eps)))
        out[name] = {"family": fam.name, "lr_mult": mult, "lr": lr * mult, "weight_decay": wd,
                     "eps": (epss[0] if len(epss) == 1 else epss) if epss else None, "param": p}
    return out


def _groups(hp: Mapping[str, dict]) -> list[dict]:
    """torch param groups of tensors with equal (lr, wd, eps): fewer groups, faster foreach kernels."""
    groups: dict[tuple, dict] = {}
    for name, h in hp.items():
        key = (h["lr_mult"], h["weight_decay"], h["eps"])
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": h["lr"], "lr_mult": h["lr_mult"],
                           "weight_decay": h["weight_decay"]}
            if h["eps"] is not None:
                groups[key]["eps"] = h["eps"]
        groups[key]["params"].append(h["param"])
        groups[key]["names"].append(name)
    return list(groups.values())


def param_groups(model: nn.Module, optimizer: str = "sgd", lr: float = 1e-3, weight_decay: float = 0.0,
                 **options) -> list[dict]:
    """Param groups with per-tensor lr (and weight_decay, eps) from the model's plan (`tensor_hparams`).

    Each group's `lr` is the *effective* lr (base lr times `lr_mult`, for handing to any torch
    optimizer); `lr_mult` is m^-c times the `layer_lr` constant, `names` the parameter names in it.
    `optimizer`: a family or optimizer name ('sgd', 'adamw', 'lion', 'adafactor', 'muon', ...).
    `layer_lr` maps parameter names or fnmatch patterns to width-independent lr constants (Everett et
    al.'s per-layer gamma_l; exact names win over patterns), multiplied into that tensor's lr.
    `no_decay`: see the module docstring. `options`: `tensor_hparams`'s (eps, eps_mode, layer_lr,
    no_decay, decoupled_wd). The model may be wrapped (DDP, FSDP1 with use_orig_params, compile).
    """
    return _groups(tensor_hparams(model, optimizer, lr, weight_decay, **options))


class ApplyLrMult:
    """Step pre-/post-hooks: group lr -> lr * lr_mult for the step, then back to the base lr.

    `relative_cap` (torch's Adafactor, whose step size is rho_t = min(lr, 1/sqrt(t))): the group gets
    lr_mult * min(lr, 1/sqrt(t)), so the cap acts on the base lr and every per-tensor ratio stays
    (torch's own min then changes nothing while lr_mult <= 1; where a factor > 1 (a tensor narrower than
    the base) meets the cap, a warning says so). If a step raised between the two hooks, the next
    pre-hook first puts the saved base values back.
    """

    def __init__(self, relative_cap: bool = False):
        self.saved = None
        self.relative_cap = relative_cap
        self.warned = False

    def pre(self, opt, args, kwargs):
        self._restore(opt)
        self.saved = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            mult = g.get("lr_mult", 1.0)
            if not self.relative_cap:
                g["lr"] = g["lr"] * mult
                continue
            st = opt.state.get(g["params"][0], {}) if g["params"] else {}
            cap = (float(st.get("step", 0)) + 1) ** -0.5  # the step about to be taken is t = step + 1
            g["lr"] = mult * min(g["lr"], cap)
            if g["lr"] > cap and not self.warned:
                self.warned = True
                warnings.warn(f"torch Adafactor caps every step size at 1/sqrt(t) = {cap:.3g}: tensors with lr factor "
                              f"{mult:.3g} > 1 lose their ratio to the others. Use the smallest width as the base "
                              "width (every factor <= 1) or a smaller lr", stacklevel=3)
        return None

    def post(self, opt, args, kwargs):
        self._restore(opt)
        return None

    def _restore(self, opt):
        if self.saved is not None:
            for g, base in zip(opt.param_groups, self.saved):
                g["lr"] = base
            self.saved = None


# The optimizers `optimizer()` builds: class, family, and the common arguments each one takes (with its
# default). An argument that no part of the requested optimizer takes is refused.
def _muon():
    return torch.optim.Muon


OPTIMIZERS = {
    "sgd": (lambda: torch.optim.SGD, "sgd", {"momentum": 0.0, "nesterov": False}),
    "momentum": (lambda: torch.optim.SGD, "sgd", {"momentum": 0.0, "nesterov": False}),
    "adam": (lambda: torch.optim.Adam, "adam", {"betas": (0.9, 0.999), "eps": 1e-8}),
    "adamw": (lambda: torch.optim.AdamW, "adam", {"betas": (0.9, 0.999), "eps": 1e-8}),
    "lion": (lambda: Lion, "sign", {"betas": (0.9, 0.99)}),
    "adafactor": (lambda: torch.optim.Adafactor, "adafactor", {"eps": (None, 1e-3)}),
    "muon": (_muon, "spectral", {"momentum": 0.95, "nesterov": True, "adjust_lr_fn": None}),
}
# accepted and ignored, as `optimizer()` always has for SGD and Adam (generic callers such as `train` pass every
# option to any name); the newer optimizers refuse what they do not take
_IGNORED = {"sgd": ("eps", "betas"), "momentum": ("eps", "betas"), "adam": ("momentum", "nesterov"),
            "adamw": ("momentum", "nesterov")}
# mix keys that name roles rather than tensors; "*" is every tensor not named otherwise
_MIX_ROLES = ("input", "hidden", "output", "vector", "scalar")


def _assign(model: nn.Module, name) -> dict[str, str]:
    """tensor name -> optimizer name, for one optimizer, the 'muon' hybrid, or a mix {role | name | pattern: optimizer}."""
    W.check_not_flattened(model)  # a FlatParameter is not in the plan: say why
    plan = get_plan(model)
    params = {n: p for n, p in W.named_parameters(model) if p.requires_grad}
    for n in params:
        if n not in plan:
            raise ValueError(f"parameter {n!r} is not in the model's plan: was it added after parameterize()?")
    if isinstance(name, str):
        key = name.lower()
        if key == "muon":  # the standard hybrid: Muon for 2-D hidden matrices, AdamW for the rest
            out = {n: ("muon" if plan[n].role == "hidden" and p.ndim == 2 else "adamw") for n, p in params.items()}
            if "muon" not in out.values():
                raise ValueError("Muon trains 2-D hidden matrices and this model has no 2-D hidden matrix (hidden tensors: "
                                 f"{[n for n in out if plan[n].role == 'hidden'] or 'none'}): use 'adamw', or a mix "
                                 "naming the matrices, e.g. {'blocks.*.weight': 'muon', '*': 'adamw'}")
            return out
        return {n: key for n in params}
    if not isinstance(name, Mapping) or not name:
        raise TypeError(f"optimizer name must be a str or a non-empty mix {{role | name | pattern: optimizer}}, got {name!r}")
    roles = {k: v for k, v in name.items() if k in _MIX_ROLES}
    pats = {k: v for k, v in name.items() if k not in _MIX_ROLES and k != "*"}
    out = {}
    for n in params:
        v = match_pattern(n, pats)
        v = v if v is not None else roles.get(plan[n].role, name.get("*"))
        if v is None:
            raise ValueError(f"the mix {dict(name)} names no optimizer for {n!r} (role {plan[n].role}): add '*'")
        out[n] = str(v).lower()
    _check_mix_keys(name, params, plan)
    return out


def _check_mix_keys(mix: Mapping, params: Mapping, plan) -> None:
    """Refuse a mix key (a role or a name pattern, not '*') that matches no trainable tensor: its optimizer would
    silently train nothing ({'hidden': 'muon', '*': 'adamw'} on a model without hidden tensors is all AdamW)."""
    roles = {plan[n].role for n in params}
    for key, opt in mix.items():
        if key == "*" or key in roles or (key not in _MIX_ROLES and any(match_pattern(n, {key: 1}) for n in params)):
            continue
        raise ValueError(f"the mix key {key!r} (-> {opt!r}) matches no trainable tensor of this model (its roles: "
                         f"{', '.join(sorted(roles))}), so {opt!r} would train nothing: drop the key or name tensors "
                         "that exist (paramlab.role_table(model) lists them)")


def optimizer(
    model: nn.Module,
    name="sgd",
    lr: float = 1e-3,
    *,
    momentum: float | None = None,
    nesterov: bool | None = None,
    weight_decay: float = 0.0,
    betas: tuple[float, float] | None = None,
    eps=None,
    eps_mode: str = "gradient",
    layer_lr: Mapping[str, float] | None = None,
    no_decay=None,
    decoupled_wd: bool = False,
    adam_lr: float | None = None,
    adjust_lr_fn: str | None = None,
    impl=None,
    options: Mapping[str, Mapping] | None = None,
    **kwargs,
) -> torch.optim.Optimizer:
    """A torch optimizer with per-tensor hyperparameters from the plan (`tensor_hparams`).

    `name`: 'sgd', 'adam', 'adamw', 'lion' (`paramlab.lion.Lion`), 'adafactor' (torch.optim.Adafactor),
    'muon' (the standard hybrid: torch.optim.Muon for the 2-D hidden matrices, AdamW for the rest), or a
    mix {role | name | fnmatch pattern: optimizer name}, e.g. {"hidden": "muon", "*": "adamw"} (exact
    names, then patterns, then roles, then "*"). Several optimizers come back as one `Combined` object
    whose `param_groups` are theirs. `impl=`: any torch optimizer class, trained as the family `name`
    declares (`impl=torch.optim.NAdam` with name 'adam'; kwargs go to it).

    `lr`, `weight_decay` and `eps` are the values at the base width (module docstring: how they scale;
    why `group["lr"]` holds the base lr so schedulers and loops keep the ratios). `adam_lr`: the base lr
    of the Adam/AdamW part of a mix (default `lr`). `momentum`, `nesterov` (SGD: 0, False; Muon: 0.95,
    True), `betas` (Adam: (0.9, 0.999); Lion: (0.9, 0.99)), `eps` (Adam: 1e-8; Adafactor: (eps1, eps2) =
    (None, 1e-3)) go to the parts that take them; one that no part takes is refused. `adjust_lr_fn`
    (Muon): 'original' (default) or 'match_rms_adamw'; each has its own width exponents (`paramlab
    schemes -v`), so both transfer. `decoupled_wd=True` keeps wd fixed instead of wd * m^c (mup's
    name; nanoGPT-mup master). `options`: optimizer name -> extra constructor kwargs in a mix (e.g.
    {"muon": {"ns_steps": 6}}); `**kwargs` go to a single optimizer (foreach, fused, ...).
    `layer_lr`, `no_decay`: see `param_groups`. The model may be wrapped (DDP, FSDP1, compile).
    """
    assign = _assign(model, name)
    parts = sorted(set(assign.values()), key=list(assign.values()).index)
    common = {"momentum": momentum, "nesterov": nesterov, "betas": betas, "eps": eps, "adjust_lr_fn": adjust_lr_fn}
    _check_request(parts, impl, common, kwargs, adam_lr)
    built = []
    for part in parts:
        names = {n for n, o in assign.items() if o == part}
        built.append(_part_optimizer(model, part, names, impl, common, options, kwargs, lr, adam_lr, weight_decay,
                                     eps_mode, layer_lr, no_decay, decoupled_wd))
    if len(built) == 1:
        return built[0]
    opt = Combined(built)
    opt.paramlab_lr_mult = True
    return opt


def _check_request(parts: list[str], impl, common: dict, kwargs: dict, adam_lr) -> None:
    """Refuse, before anything is built, an `optimizer()` call whose arguments do not fit its parts: an unknown
    name, impl= with a mix, kwargs a mix cannot place, adam_lr without an Adam part, a common argument no part
    takes (`OPTIMIZERS`, `_IGNORED`), an unknown adjust_lr_fn."""
    if impl is not None:
        if len(parts) != 1:
            raise ValueError("impl= takes one optimizer class and one family name, not a mix")
        if not (isinstance(impl, type) and issubclass(impl, torch.optim.Optimizer)):
            raise TypeError(f"impl must be a torch.optim.Optimizer subclass, got {impl!r}")
        get_family(parts[0])  # the declared family must be known
    unknown = [p for p in parts if p not in OPTIMIZERS and impl is None]
    if unknown:
        raise ValueError(f"unknown optimizer {unknown[0]!r}: expected one of {', '.join(OPTIMIZERS)}, a mix "
                         "{role | name | pattern: optimizer}, or impl=<torch optimizer class> with its family name")
    if len(parts) > 1 and kwargs:
        raise ValueError(f"extra keyword arguments {sorted(kwargs)} are ambiguous in a mix of {parts}: "
                         "pass them per optimizer, options={name: {...}}")
    if adam_lr is not None:
        _check_positive("adam_lr", adam_lr)
    if adam_lr is not None and not {"adam", "adamw"} & set(parts):
        raise ValueError(f"adam_lr sets the AdamW part of a mix, and {parts} has none")
    given = {k for k, v in common.items() if v is not None}
    if impl is None:
        takes = set().union(*(set(OPTIMIZERS[p][2]) | set(_IGNORED.get(p, ())) for p in parts))
        if given - takes:
            raise ValueError(f"{sorted(given - takes)} make(s) no sense for {' + '.join(parts)}: "
                             f"{' + '.join(parts)} take(s) {sorted(takes) or 'none of momentum, betas, eps'}")
    if common["adjust_lr_fn"] not in MUON_ADJUST:
        raise ValueError(f"adjust_lr_fn must be one of {[k for k in MUON_ADJUST if k]}, got {common['adjust_lr_fn']!r}")


def _part_optimizer(model, part: str, names: set, impl, common: dict, options, kwargs: dict, lr, adam_lr,
                    weight_decay, eps_mode, layer_lr, no_decay, decoupled_wd) -> torch.optim.Optimizer:
    """The torch optimizer of one part of `optimizer()` (the tensors `names`), with its per-tensor groups and
    the `ApplyLrMult` hooks; its entry of `options` and `kwargs` go to its constructor."""
    if impl is None:
        make, fam, defaults = OPTIMIZERS[part]
        cls = make()
        args = {k: (common[k] if common[k] is not None else d) for k, d in defaults.items()}
    else:
        cls, fam, args = impl, get_family(part).name, {k: v for k, v in common.items() if v is not None}
    if part == "muon":
        fam = MUON_ADJUST[args["adjust_lr_fn"]]
    _check_part(model, part, fam, names, args, lr)
    # adam_lr / lr rides in lr_mult, so a loop writing one lr into every group keeps the parts' ratio too
    part_scale = adam_lr / _check_positive("lr", lr) if (adam_lr is not None and part in ("adam", "adamw")) else 1.0
    # eps that follows a scale travels per group (Adam's, Adafactor's pair); Muon's fixed guard stays an argument
    scaled_eps = any(f != "fixed" for _, f in get_family(fam).eps)
    part_eps = args.pop("eps", None) if scaled_eps else None
    groups = _groups(tensor_hparams(model, fam, lr, weight_decay, part_eps, eps_mode, layer_lr, no_decay,
                                    decoupled_wd, names=names))
    for g in groups:
        g["lr"] = lr  # the base lr: ApplyLrMult multiplies in lr_mult at each step
        g["lr_mult"] *= part_scale
    extra = {**dict((options or {}).get(part, {})), **kwargs}
    opt = cls(groups, lr=lr, **{**args, **extra})
    hooks = ApplyLrMult(relative_cap=get_family(fam).lr_b != 0)
    opt.register_step_pre_hook(hooks.pre)
    opt.register_step_post_hook(hooks.post)
    opt.paramlab_lr_mult = True  # group["lr"] is the base lr (see effective_lrs)
    opt.paramlab_family = fam
    return opt


def _check_part(model, part: str, fam: str, names, args: dict, lr: float) -> None:
    """Refuse, before any step, what the part cannot train right."""
    plan = get_plan(model)
    if fam.startswith("spectral"):
        for n in names:
            t = plan[n]
            if len(t.shape) != 2:
                raise ValueError(f"Muon takes 2-D matrices and {n!r} has shape {tuple(t.shape)}: give it to AdamW "
                                 "(the 'muon' hybrid does this for you)")
            if t.role in ("input", "output") and t.kind != "linear":
                raise ValueError(f"{n!r} ({t.role}, {t.kind}) is not stored (fan_out, fan_in), which Muon's "
                                 "sqrt(A/B) lr adjustment assumes for input and output layers: give it to AdamW")
    if part == "adafactor":
        if lr > 1:
            raise ValueError(f"Adafactor's step is min(lr, 1/sqrt(t)) * RMS(w) with 1/sqrt(t) <= 1, so lr = {lr} > 1 "
                             "is never used: pass lr <= 1 (torch's default 1e-2)")
        e = args.get("eps")
        if not (isinstance(e, (tuple, list)) and len(e) == 2):
            raise ValueError(f"Adafactor's eps is a pair (eps1, eps2) = (gradient floor or None, RMS(w) floor), got {e!r}")
        if e[1] is None or e[1] <= 0:
            raise ValueError(f"Adafactor's eps2 (the floor of RMS(w) in the step size) must be > 0, got {e[1]!r}: "
                             "with 0 a zero-initialized tensor never moves")
    if part == "sgd" and args.get("nesterov") and not args.get("momentum"):
        raise ValueError("Nesterov momentum requires a momentum > 0")


def effective_lrs(opt: torch.optim.Optimizer) -> dict[str, float]:
    """name -> the learning rate each tensor trains with at the next step (groups need `names`)."""
    scaled = getattr(opt, "paramlab_lr_mult", False)
    out = {}
    for g in opt.param_groups:
        lr = float(g["lr"]) * (g.get("lr_mult", 1.0) if scaled else 1.0)
        for n in g.get("names", ()):
            out[n] = lr
    return out


def trained_families(opt: torch.optim.Optimizer) -> dict[str, str]:
    """name -> the family each tensor trains with, for an optimizer from `optimizer()` (a `Combined` one too)."""
    out = {}
    for part in getattr(opt, "parts", [opt]):
        fam = getattr(part, "paramlab_family", None)
        if fam is None:
            raise ValueError(f"{type(part).__name__} was not built by paramlab.optimizer: its families are unknown")
        for g in part.param_groups:
            out.update({n: fam for n in g.get("names", ())})
    return out
