"""Apply a scheme to any `nn.Module`: initialization, forward multipliers, per-tensor learning rates.

For every parameter `w` with role `r`, width multiplier `m` (see `paramlab.roles`) and scheme
exponents `(a, b, c_sgd, c_adam)` (see `paramlab.schemes`):

    init        w ~ N(0, (sigma_base * m^-b)^2),  sigma_base = gain / sqrt(fan_in at the base width)
    forward     the module computes with m^-a * w   (times a width-free constant, e.g. output_mult)
    optimizer   lr(w) = lr * m^-c                   (read by `paramlab.optimizer`)

so at the base width (m = 1) every scheme is the same network: He/LeCun-normal weights with std
gain/sqrt(fan_in), embeddings N(0, 1), biases N(0, bias_std^2) (zero by default), norm gains 1 and
norm biases 0, readout gain 1, and a single learning rate.

All metadata lives in a `Plan` (plain floats keyed by parameter name) stored on the module as
`module.paramlab_plan`; nothing is attached to the `nn.Parameter`s themselves, so `copy.deepcopy`,
`state_dict` / `load_state_dict` (also with `torch.load(weights_only=True)`), `torch.compile` and
`torch.func.functional_call` / `vmap` / `jacrev` keep working. Multipliers are forward hooks that
read the parameters at call time:

    Linear / Conv   input scaled by m^-a before the layer (as mup's MuReadout does), so the bias is
                    left alone when its own multiplier is 1; otherwise out * m^-a_w + (m^-a_b - m^-a_w) * b
    Embedding       output scaled by m^-a
    norm layers     out * m^-a_w + (m^-a_b - m^-a_w) * b
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from . import roles as R
from .plan_options import PlanOptions
from .schemes import ROLES, Scheme, get_scheme

PLAN_ATTR = "paramlab_plan"
INIT_KINDS = ("normal", "zeros", "ones", "keep")


@dataclass(frozen=True)
class TensorPlan:
    """Everything paramlab decided for one parameter (plain numbers, safe to copy and pickle)."""

    name: str
    shape: tuple
    role: str
    kind: str  # linear, conv, embedding, norm, bias, other
    m: float  # width multiplier of this tensor (current / base size of its main width dim)
    a: float
    b: float
    c_sgd: float
    c_adam: float
    init: str  # normal, zeros, ones, keep
    base_std: float  # std at the base width (for init == "normal")
    const: float = 1.0  # width-free forward constant (output_mult on the readout)

    @property
    def mult(self) -> float:
        """Forward multiplier const * m^-a."""
        return self.const * self.m ** (-self.a)

    @property
    def init_std(self) -> float:
        """Init std sigma_base * m^-b (0 for zeros/ones/keep)."""
        return self.base_std * self.m ** (-self.b) if self.init == "normal" else 0.0

    def c(self, family: str) -> float:
        return self.c_adam if family == "adam" else self.c_sgd

    def lr_mult(self, family: str) -> float:
        """Per-tensor learning-rate multiplier m^-c for an optimizer family ('sgd' or 'adam')."""
        return self.m ** (-self.c(family))


@dataclass(frozen=True)
class Plan:
    """A scheme resolved for one model: name -> TensorPlan, in `named_parameters` order."""

    scheme: Scheme
    tensors: tuple[TensorPlan, ...]
    _index: dict = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {t.name: t for t in self.tensors})

    def __getitem__(self, name: str) -> TensorPlan:
        return self._index[name]

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self):
        return len(self.tensors)

    def rows(self, optimizer: str = "sgd") -> list[dict]:
        """One dict per tensor: name, shape, role, m, a, b, c, init std, multiplier, lr multiplier."""
        from .schemes import optimizer_family

        fam = optimizer_family(optimizer)
        return [
            dict(name=t.name, shape=tuple(t.shape), role=t.role, m=t.m, a=t.a, b=t.b, c=t.c(fam),
                 init=t.init, init_std=t.init_std, mult=t.mult, lr_mult=t.lr_mult(fam))
            for t in self.tensors
        ]

    def table(self, optimizer: str = "sgd") -> str:
        """Printable role table: name, shape, role, a, b, c, init std, forward multiplier, lr multiplier."""
        rows = self.rows(optimizer)
        head = ("name", "shape", "role", "m", "a", "b", f"c_{optimizer}", "init std", "mult", "lr mult")
        cells = [
            (r["name"], "x".join(map(str, r["shape"])), r["role"], f"{r['m']:g}", f"{r['a']:g}", f"{r['b']:g}",
             f"{r['c']:g}", r["init"] if r["init"] != "normal" else f"{r['init_std']:.4g}", f"{r['mult']:.4g}",
             f"{r['lr_mult']:.4g}")
            for r in rows
        ]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
        return "\n".join([f"scheme {self.scheme.name}", fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in cells])


def get_plan(model: nn.Module) -> Plan:
    """The Plan of a parameterized model (also through torch.compile's wrapper)."""
    plan = getattr(model, PLAN_ATTR, None)
    if plan is None:
        raise ValueError(
            "this model has no paramlab plan: build it with a paramlab builder (paramlab.mlp, ...) "
            "or call paramlab.parameterize(model, scheme, base=...) first"
        )
    return plan


def role_table(model: nn.Module, optimizer: str = "sgd") -> str:
    """The role table of a parameterized model, as text."""
    return get_plan(model).table(optimizer)


# -- forward multipliers ---------------------------------------------------------------------------


class InputScale:
    """forward pre-hook: x -> scale * x (for layers linear in their input, e.g. Linear, Conv)."""

    def __init__(self, scale: float):
        self.scale = float(scale)

    def __call__(self, module, args):
        return (args[0] * self.scale,) + tuple(args[1:])


class OutputAffine:
    """forward hook: out -> w_mult * out + (b_mult - w_mult) * bias (bias broadcast on `bias_dim`)."""

    def __init__(self, w_mult: float, b_mult: float = 1.0, bias_dim: int = -1):
        self.w_mult, self.b_mult, self.bias_dim = float(w_mult), float(b_mult), bias_dim

    def __call__(self, module, args, out):
        out = out * self.w_mult
        bias = getattr(module, "bias", None)
        if bias is not None and self.b_mult != self.w_mult:
            shape = [1] * out.dim()
            if self.bias_dim == -1:  # bias covers the trailing dims (Linear, LayerNorm)
                shape[out.dim() - bias.dim():] = bias.shape
            else:
                shape[self.bias_dim] = bias.shape[0]
            out = out + (self.b_mult - self.w_mult) * bias.reshape(shape)
        return out


_HOOK_TYPES = (InputScale, OutputAffine)


def _install_multipliers(model: nn.Module, plan: Plan) -> None:
    for mname, mod in model.named_modules():
        prefix = f"{mname}." if mname else ""
        own = {p: plan[prefix + p] for p, t in mod._parameters.items() if t is not None and prefix + p in plan}
        if not own or all(t.mult == 1.0 for t in own.values()):
            continue
        w, bias = own.get("weight"), own.get("bias")
        w_mult = w.mult if w is not None else 1.0
        b_mult = bias.mult if bias is not None else w_mult
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) and not isinstance(mod, nn.modules.conv._ConvTransposeNd):
            if b_mult == 1.0 or mod.bias is None:
                mod.register_forward_pre_hook(InputScale(w_mult))
            else:
                mod.register_forward_hook(OutputAffine(w_mult, b_mult, -1 if isinstance(mod, nn.Linear) else 1))
        elif isinstance(mod, nn.Embedding):
            mod.register_forward_hook(OutputAffine(w_mult))
        elif isinstance(mod, R.NORM_TYPES):
            channel_first = not isinstance(mod, (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
            mod.register_forward_hook(OutputAffine(w_mult, b_mult, 1 if channel_first else -1))
        else:
            bad = [t.name for t in own.values() if t.mult != 1.0]
            raise ValueError(
                f"parameters {bad} need forward multipliers, but paramlab can only install them on Linear, Conv, "
                f"Embedding and norm layers (module {mname!r} is a {type(mod).__name__}). Use the equivalent scheme "
                f"without multipliers, scheme.canonical() (same training dynamics), or wrap the parameter in a supported layer"
            )


def unparameterize(model: nn.Module) -> nn.Module:
    """Remove paramlab's multipliers and plan (weights are kept as they are)."""
    for mod in model.modules():
        for hooks in (mod._forward_pre_hooks, mod._forward_hooks):
            for k in [k for k, h in hooks.items() if isinstance(h, _HOOK_TYPES)]:
                del hooks[k]
    if PLAN_ATTR in model.__dict__:
        del model.__dict__[PLAN_ATTR]
    return model


# -- planning --------------------------------------------------------------------------------------


def match_pattern(name: str, table: Mapping | None):
    """Value for `name` in a dict keyed by exact names or fnmatch patterns (exact names win)."""
    if not table:
        return None
    if name in table:
        return table[name]
    for pat, v in table.items():
        if fnmatch.fnmatchcase(name, pat):
            return v
    return None


def make_plan(
    model: nn.Module,
    scheme: Scheme | str,
    base=None,
    delta=None,
    *,
    roles: Mapping[str, str] | None = None,
    **options,
) -> Plan:
    """Resolve `scheme` for `model` without touching it (see `parameterize` for the arguments;
    `options` are the `PlanOptions` keywords)."""
    opts = PlanOptions.from_kwargs(options).with_gain(1.0)
    scheme = get_scheme(scheme)
    dims = R.resolve_width_dims(model, base, delta)
    kinds = R.param_kinds(model)
    if all(all(d is None for d in dims[n]) for n in kinds):
        raise ValueError(
            "no parameter has a width dimension: the base model has the same shapes as the model. Pass "
            "delta= (the model at another width) so paramlab can tell which dims are widths"
        )
    for n in (roles or {}):
        if n not in kinds and not any(fnmatch.fnmatchcase(k, n) for k in kinds):
            raise ValueError(f"roles= names {n!r}, which matches no parameter of the model")
    tensors, missing, readouts = [], [], set()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for name, kind in kinds.items():
        wd = dims[name]
        inferred = R.infer_role(kind, wd)
        tag = match_pattern(name, roles)
        if tag is not None and tag not in ROLES:
            raise ValueError(f"roles[{name!r}] = {tag!r} is not a role: roles are {', '.join(ROLES)}")
        if tag is not None and inferred is not None and tag != inferred:
            raise ValueError(
                f"parameter {name!r}: tagged {tag!r} but its width dims {wd} make it {inferred!r}; "
                "check the base/delta models or the tag"
            )
        role = tag or inferred
        if role is None:
            missing.append(f"{name} {list(shapes[name])} ({kind})")
            continue
        shape = shapes[name]
        base_shape = tuple(b if b is not None else s for b, s in zip(wd, shape))
        ex = scheme[role]
        m = R.width_mult(shape, wd)
        # readout_zero_init zeroes the readout weight and the bias of the same layer
        zero = opts.readout_zero_init and (role == "output" or (kind == "bias" and name[:-4] + "weight" in readouts))
        if role == "output":
            readouts.add(name)
        init_kind, base_std = _default_init(kind, role, name, base_shape, opts.gain, opts.readout_gain, opts.bias_std,
                                             opts.embedding_std, zero)
        override = match_pattern(name, opts.init)
        if override is not None:
            if isinstance(override, str):
                if override not in INIT_KINDS or override == "normal":
                    raise ValueError(f"init[{name!r}] = {override!r}: give a base std (float) or one of zeros, ones, keep")
                init_kind, base_std = override, 0.0
            else:
                init_kind, base_std = "normal", float(override)
        if init_kind == "keep" and ex.b != 0 and m != 1.0:
            raise ValueError(
                f"parameter {name!r} ({kind}): paramlab does not know its base init, and scheme {scheme.name!r} "
                f"scales it by m^-{ex.b:g}. Give its std at the base width with init={{{name!r}: std}}"
            )
        const = opts.output_mult if role == "output" else 1.0
        tensors.append(TensorPlan(name, shape, role, kind, m, ex.a, ex.b, ex.c_sgd, ex.c_adam, init_kind, base_std, const))
    if missing:
        raise ValueError(
            "paramlab cannot tell the role of these parameters (not Linear/Conv/Embedding/norm weights): "
            + "; ".join(missing)
            + ". Pass roles={name: 'input'|'hidden'|'output'|'vector'|'scalar'} (fnmatch patterns work)"
        )
    return Plan(scheme, tuple(tensors))


def _default_init(kind, role, name, base_shape, gain, readout_gain, bias_std, embedding_std, zero):
    """(init kind, std at base width) for one parameter: the SP network every scheme equals at m = 1."""
    if zero:
        return "zeros", 0.0
    if kind in ("linear", "conv"):
        g = readout_gain if role == "output" else gain
        return "normal", g / math.sqrt(R.fan_in(kind, base_shape))
    if kind == "embedding":
        return "normal", embedding_std
    if kind == "bias":
        return ("normal", bias_std) if bias_std > 0 else ("zeros", 0.0)
    if kind == "norm":
        return ("ones", 0.0) if name.endswith("weight") else ("zeros", 0.0)
    if len(base_shape) >= 2:
        return "normal", gain / math.sqrt(R.fan_in("linear", base_shape))
    return "keep", 0.0


# -- applying --------------------------------------------------------------------------------------


@torch.no_grad()
def initialize(model: nn.Module, plan: Plan | None = None, seed: int | None = None) -> nn.Module:
    """(Re-)draw every parameter from its plan: N(0, init_std^2), zeros, ones, or keep.

    Draws are made in `named_parameters` order with one generator, in the parameter's own dtype, so a
    fixed seed gives bit-identical weights for every scheme at the base width.
    """
    plan = plan or get_plan(model)
    gen = None
    if seed is not None:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
    params = dict(model.named_parameters())
    for t in plan:
        p = params[t.name]
        if t.init == "normal":
            z = torch.randn(p.shape, generator=gen, dtype=p.dtype if p.dtype.is_floating_point else torch.float32)
            p.copy_(z.to(p.device) * t.init_std)
        elif t.init == "zeros":
            p.zero_()
        elif t.init == "ones":
            p.fill_(1.0)
    return model


def parameterize(
    model: nn.Module,
    scheme: Scheme | str,
    base=None,
    delta=None,
    *,
    roles: Mapping[str, str] | None = None,
    reinit: bool = True,
    seed: int | None = None,
    **options,
) -> nn.Module:
    """Apply `scheme` to `model` in place and return it.

    Args:
        scheme: a `Scheme` or preset name ('sp', 'sp-stable', 'ntk', 'mf', 'mup', 'lazy-rich-<alpha>').
        base: the same architecture at the base width (an nn.Module, on device='meta' is fine), a dict
            name -> shape, a `mup` .bsh file, or None for a model already set up by `mup.set_base_shapes`.
        delta: the architecture at a second width, to mark width dims when `model` is at the base width.
        roles: name (or fnmatch pattern) -> role, for parameters paramlab cannot classify and as a check.
        reinit: draw fresh weights from the scheme (False keeps the current values, e.g. before loading
            a checkpoint, or to keep weights copied from another model).
        seed: seed of the init draws (default: torch's global RNG).
        options: the `PlanOptions` keywords, the network at the base width: gain (default 1 here;
            sqrt(2) for a ReLU net), readout_gain, output_mult, bias_std, embedding_std,
            readout_zero_init, init (see `paramlab.plan_options`).

    Raises ValueError if `model` is already parameterized, or if a parameter has no role.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"parameterize expects an nn.Module, got {type(model).__name__}")
    if getattr(model, PLAN_ATTR, None) is not None:
        raise ValueError(
            "this model is already parameterized (it has a paramlab plan): build a fresh model, or call "
            "paramlab.unparameterize(model) first to remove the old multipliers"
        )
    if any(isinstance(h, _HOOK_TYPES) for mod in model.modules() for h in
           list(mod._forward_pre_hooks.values()) + list(mod._forward_hooks.values())):
        raise ValueError(
            "a submodule of this model already carries paramlab multipliers (it was parameterized on its own): "
            "call paramlab.unparameterize on it first, or parameterize only the whole model"
        )
    plan = make_plan(model, scheme, base, delta, roles=roles, **options)
    if reinit:
        initialize(model, plan, seed=seed)
    _install_multipliers(model, plan)
    model.__dict__[PLAN_ATTR] = plan
    return model
