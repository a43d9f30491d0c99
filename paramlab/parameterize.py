"""Apply a scheme to any `nn.Module`: initialization, forward multipliers, per-tensor learning rates.

For every parameter `w` with role `r`, width multiplier `m` (see `paramlab.roles`) and scheme
exponents `(a, b, c_sgd, c_adam)` (see `paramlab.schemes`):

    init        w ~ N(0, (sigma_base * m^-b)^2),  sigma_base = gain / sqrt(fan_in at the base width)
    forward     the module computes with m^-a * w   (times a width-free constant, e.g. output_mult)
    optimizer   lr(w) = lr * m^-c                   (read by `paramlab.optimizer`)

so at the base width (m = 1) every scheme is the same network: He/LeCun-normal weights with std
gain/sqrt(fan_in), embeddings N(0, 1), biases N(0, bias_std^2) (zero by default), norm gains 1 and
norm biases 0, readout gain 1, and a single learning rate.

Where fan-in and fan-out live, and how a multiplier is installed, comes from one table keyed by
module type (`paramlab.layouts`: Linear, Conv, Embedding, norms, HF Conv1D, nn.MultiheadAttention,
mup's MuReadout, ...). A tensor held by several modules (a tied embedding and readout) has one role
per *use* (`paramlab.roles.find_uses`): its init and learning rate come from one use, each use gets
its own forward multiplier, as mup's MuSharedReadout does. Attention modules get the scheme's logit
scale (`paramlab.attention`), and the first forward pass of a foreign model is checked for uses the
plan does not cover (`paramlab.audit`). What paramlab cannot make right is refused with an error that
names the fix.

A depth rule (`paramlab.depth`: depth-muP, CompleteP) composes with the scheme: `depth_scaling=`,
`base_depth=` and `branches=` (the modules whose output enters a residual sum) multiply each branch
output by (L/L0)^-alpha and give the tensors inside the residual blocks the rule's lr and Adam-eps
factors (`plan.depth`, read by `paramlab.optim`). At L == L0 it changes nothing.

All metadata lives in a `Plan` (plain floats keyed by parameter name) stored on the module as
`module.paramlab_plan`; nothing is attached to the `nn.Parameter`s themselves, so `copy.deepcopy`,
`state_dict` / `load_state_dict` (also with `torch.load(weights_only=True)`), `torch.compile` and
`torch.func.functional_call` / `vmap` / `jacrev` keep working. Multipliers are forward hooks that
read the parameters at call time (`paramlab.multipliers`). Models inside DDP, FSDP1 or
torch.compile wrappers are unwrapped (`paramlab.wrappers`).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from . import attention as A
from . import audit as AU
from . import depth as DP
from . import guard as GU
from . import multipliers as MU
from . import replaced as RP
from . import roles as R
from . import tied as TI
from . import unit as UN
from . import wrappers as W
from .layouts import fan_in
from .multipliers import InputScale, OutputAffine  # noqa: F401 (the hook types, importable from here)
from .patterns import match_pattern
from .plan_options import PlanOptions
from .schemes import ROLES, Exponents, Scheme, column_family, get_scheme, optimizer_family

PLAN_ATTR = "paramlab_plan"
INIT_KINDS = ("normal", "zeros", "ones", "keep")


@dataclass(frozen=True)
class TensorPlan:
    """Everything paramlab decided for one parameter (plain numbers, safe to copy and pickle).

    `role`, `kind`, `m`, the exponents and the init are those of the tensor's *primary use*, the
    module `module` that holds it as `attr` (for a tied embedding/readout: the embedding). Further uses
    of the same tensor are `UsePlan`s in `Plan.uses`.
    """

    name: str
    shape: tuple
    role: str
    kind: str  # linear, linear_t, conv, embedding, norm, bias, other
    m: float  # width multiplier of this tensor (current / base size of its main width dim)
    a: float
    b: float
    c_sgd: float
    c_adam: float
    init: str  # normal, zeros, ones, keep
    base_std: float  # std at the base width (for init == "normal")
    const: float = 1.0  # width-free forward constant (output_mult on the readout)
    module: str = ""  # the module of the primary use ('' with attr == name for the root)
    attr: str = ""

    def __post_init__(self):
        if not self.attr:  # a plan built by hand: the tensor's own name is its use
            mod, _, attr = self.name.rpartition(".")
            object.__setattr__(self, "module", mod)
            object.__setattr__(self, "attr", attr)

    @property
    def use(self) -> str:
        return f"{self.module}.{self.attr}" if self.module else self.attr

    @property
    def mult(self) -> float:
        """Forward multiplier const * m^-a."""
        return self.const * self.m ** (-self.a)

    @property
    def init_std(self) -> float:
        """Init std sigma_base * m^-b (0 for zeros/ones/keep)."""
        return self.base_std * self.m ** (-self.b) if self.init == "normal" else 0.0

    def c(self, optimizer: str) -> float:
        """The LR exponent for an optimizer name or family whose rule is a bare scheme column: 'sgd',
        'momentum', 'adam', 'adamw', 'lion'. Adafactor and Muon depend on the scheme: `Plan.lr_exponent`."""
        return self.c_adam if column_family(optimizer) == "adam" else self.c_sgd

    def lr_mult(self, optimizer: str) -> float:
        """Per-tensor learning-rate multiplier m^-c for an optimizer name or family."""
        return self.m ** (-self.c(optimizer))


@dataclass(frozen=True)
class UsePlan:
    """A further use of a tensor (a tied readout): its own role and forward multiplier.

    The tensor's init and learning rate are its primary use's (`Plan[tensor]`); this use only
    changes how the module `module` computes with it: m^-a * const * tensor.
    """

    name: str  # the use's own name, e.g. lm_head.weight
    tensor: str  # the tensor's name, e.g. model.embed_tokens.weight
    module: str
    attr: str
    role: str
    kind: str
    m: float
    a: float
    const: float = 1.0

    @property
    def mult(self) -> float:
        return self.const * self.m ** (-self.a)


@dataclass(frozen=True)
class Plan:
    """A scheme resolved for one model: name -> TensorPlan in `named_parameters` order, further uses of
    tied tensors, and the attention modules with the logit scale each gets."""

    scheme: Scheme
    tensors: tuple[TensorPlan, ...]
    uses: tuple[UsePlan, ...] = ()
    attention: tuple[A.AttentionSite, ...] = ()
    depth: DP.DepthPlan | None = None  # the depth rule resolved for this model (paramlab.depth), if any
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

    def lr_exponent(self, name: str, optimizer) -> float | None:
        """lr exponent c (lr ~ m^-c) of tensor `name` under an optimizer family (`Scheme.lr_exponent`);
        None where the family cannot train the tensor (a spectral family on a vector)."""
        t = self[name]
        return self.scheme.lr_exponent(t.role, optimizer, Exponents(t.a, t.b, t.c_sgd, t.c_adam))

    def lr_mult(self, name: str, optimizer) -> float | None:
        """m^-c of tensor `name` under an optimizer family (None: the family cannot train it)."""
        c = self.lr_exponent(name, optimizer)
        return None if c is None else self[name].m ** (-c)

    def rows(self, optimizer: str = "sgd") -> list[dict]:
        """One dict per tensor, then one per further use of a tied tensor: name, shape, role, m, a, b, c,
        init std, multiplier, lr multiplier (`tied_to`: the tensor a use shares, None for tensors)."""
        rows = [
            dict(name=t.name, shape=tuple(t.shape), role=t.role, m=t.m, a=t.a, b=t.b, c=self.lr_exponent(t.name, optimizer),
                 init=t.init, init_std=t.init_std, mult=t.mult, lr_mult=self.lr_mult(t.name, optimizer), tied_to=None)
            for t in self.tensors
        ]
        for u in self.uses:
            t = self[u.tensor]
            rows.append(dict(name=u.name, shape=tuple(t.shape), role=u.role, m=u.m, a=u.a, b=None, c=None, init=None,
                             init_std=None, mult=u.mult, lr_mult=None, tied_to=u.tensor))
        return rows

    def table(self, optimizer: str = "sgd") -> str:
        """Printable role table: name, shape, role, a, b, c, init std, forward multiplier, lr multiplier.

        A further use of a tied tensor is a row of its own, with its role and multiplier; its init and
        lr are the tensor's ('= name'). Attention modules follow with the logit scale each gets.
        """
        rows = self.rows(optimizer)
        head = ("name", "shape", "role", "m", "a", "b", f"c_{optimizer}", "init std", "mult", "lr mult")
        cells = []
        for r in rows:
            if r["tied_to"] is None:
                init = r["init"] if r["init"] != "normal" else f"{r['init_std']:.4g}"
                cells.append((r["name"], "x".join(map(str, r["shape"])), r["role"], f"{r['m']:g}", f"{r['a']:g}",
                              f"{r['b']:g}", "-" if r["c"] is None else f"{r['c']:g}", init, f"{r['mult']:.4g}",
                              "-" if r["lr_mult"] is None else f"{r['lr_mult']:.4g}"))
            else:
                same = f"= {r['tied_to']}"
                cells.append((r["name"], "x".join(map(str, r["shape"])), r["role"], f"{r['m']:g}", f"{r['a']:g}",
                              "", "", same, f"{r['mult']:.4g}", "(shared)"))
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
        lines = [f"scheme {self.scheme.name}", fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in cells]
        if self.attention:
            lines += ["attention logits:"] + [f"  {s.row()}" for s in self.attention]
        if self.depth is not None:
            lr_in, eps_in, wd_in = self.depth.rule.factors(self.depth.m_L, True, optimizer_family(optimizer))
            lines += [self.depth.describe(),
                      f"  in-block tensors: lr x{lr_in:.4g}, Adam eps x{eps_in:.4g}, wd x{wd_in:.4g} (on top of the "
                      f"width factors above); the others x1. Branches: {', '.join(self.depth.branches[:4])}"
                      + (", ..." if len(self.depth.branches) > 4 else "")]
        return "\n".join(lines)


def get_plan(model: nn.Module) -> Plan:
    """The Plan of a parameterized model (also through DDP, FSDP1 and torch.compile wrappers)."""
    plan = getattr(W.unwrap(model), PLAN_ATTR, None)
    if plan is None:
        raise ValueError(
            "this model has no paramlab plan: build it with a paramlab builder (paramlab.mlp, ...) "
            "or call paramlab.parameterize(model, scheme, base=...) first"
        )
    if "fsdp1" not in W.wrapper_kinds(model):  # FSDP shows its shards between passes: its forward checks
        RP.check(W.unwrap(model), plan)  # a planned layer replaced since: refused with the fix
    return plan


def role_table(model: nn.Module, optimizer: str = "sgd") -> str:
    """The role table of a parameterized model, as text."""
    return get_plan(model).table(optimizer)


def replan_resized(model: nn.Module) -> nn.Module:
    """Take tensors resized in place in a dim that is not a width (a new head's number of outputs, a
    vocabulary grown by resize_token_embeddings) into the model's plan; multipliers and lrs stay. A
    changed width dim or a replaced module is refused (`paramlab.replaced`). Returns the model."""
    inner = W.unwrap(model)
    plan = inner.__dict__.get(PLAN_ATTR)
    if plan is None:
        raise ValueError("replan_resized needs a parameterized model")
    inner.__dict__[PLAN_ATTR] = RP.resized_plan(inner, plan)
    return model


def unparameterize(model: nn.Module) -> nn.Module:
    """Remove paramlab's multipliers, attention scales, checks and plan (weights are kept as they are)."""
    inner = W.unwrap(model)
    plan = inner.__dict__.get(PLAN_ATTR)
    MU.remove(inner)
    DP.remove(inner)
    A.restore(inner, plan.attention if plan is not None else ())
    AU.remove(inner)
    RP.remove(inner)
    if PLAN_ATTR in inner.__dict__:
        del inner.__dict__[PLAN_ATTR]
    return model


# -- planning --------------------------------------------------------------------------------------


def _primary(tensor: str, uses: list, roles: list[str], scheme: Scheme) -> int:
    """Index of the use whose role sets a shared tensor's init and learning rate.

    One role: the first use. An embedding tied to a readout: the embedding, as paramlab's tied
    Transformer does (under muP, MF, NTK the two roles share b and c, so this is exact for both uses;
    under SP it is GPT-2's tied SP). Other mixes must agree on (b, c_sgd, c_adam) or are refused.
    """
    if len(set(roles)) == 1:
        return 0
    emb = [i for i, u in enumerate(uses) if u.kind == "embedding"]
    if emb and set(roles) <= {"input", "output"}:
        return emb[0]
    ex = [scheme[r] for r in roles]
    if all((e.b, e.c_sgd, e.c_adam) == (ex[0].b, ex[0].c_sgd, ex[0].c_adam) for e in ex):
        return 0
    listing = ", ".join(f"{u.name} as {r}" for u, r in zip(uses, roles))
    raise ValueError(
        f"tensor {tensor!r} is used in several places with roles that need different inits or learning rates under "
        f"scheme {scheme.name!r} ({listing}); one tensor can have only one. Untie it (give each module its own "
        "parameter), or tag its uses with one role via roles={name: role}"
    )


def make_plan(
    model: nn.Module,
    scheme: Scheme | str,
    base=None,
    delta=None,
    *,
    roles: Mapping[str, str] | None = None,
    attention="auto",
    attn_mult=None,
    depth_scaling=None,
    base_depth: int | None = None,
    branches=None,
    blocks=None,
    depth: int | None = None,
    **options,
) -> Plan:
    """Resolve `scheme` (and a depth rule) for `model` without touching it (see `parameterize` for the
    arguments; `options` are the `PlanOptions` keywords)."""
    opts = PlanOptions.from_kwargs(options).with_gain(1.0)
    scheme = get_scheme(scheme)
    model = W.unwrap(model)
    base = W.unwrap(base) if isinstance(base, nn.Module) else base
    delta = W.unwrap(delta) if isinstance(delta, nn.Module) else delta
    dims = R.resolve_width_dims(model, base, delta)
    uses = R.find_uses(model)
    if all(all(d is None for d in dims[n]) for n in uses):
        raise ValueError(
            "no parameter has a width dimension: the base model has the same shapes as the model. Pass "
            "delta= (the model at another width) so paramlab can tell which dims are widths"
        )
    _check_role_names(roles, uses)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    tensors, extra, missing, readout_modules = [], [], [], set()
    for name, ulist in uses.items():
        wd, shape = dims[name], shapes[name]
        ulist = ulist or [R.Use(name, name, name.rpartition(".")[0], name.rpartition(".")[2], None, "other")]
        found = [_use_role(u, wd, roles) for u in ulist]
        if any(r is None for r in found):
            kinds = ", ".join(sorted({u.kind for u, r in zip(ulist, found) if r is None}))
            missing.append(f"{name} {list(shape)} ({kinds})")
            continue
        p = _primary(name, ulist, found, scheme)
        pu, role = ulist[p], found[p]
        m = R.width_mult(shape, wd)
        for u, r in zip(ulist, found):
            if r == "output":
                readout_modules.add(u.module)
        if opts.readout_zero_init and "output" in found and any(r != "output" for r in found):
            raise ValueError(f"readout_zero_init=True would zero {name!r}, which is also used as "
                             f"{[u.name for u, r in zip(ulist, found) if r != 'output']}: use a small output_mult instead")
        base_shape = tuple(b if b is not None else s for b, s in zip(wd, shape))
        ex = scheme[role]
        if scheme.unit:  # u-muP's frame: exponents in the tensor's own fan, every dim's base size 1 (paramlab.unit)
            m, base_shape = UN.unit_fan(pu.kind, role, shape), UN.base_shape(shape)
        # readout_zero_init zeroes the readout weight and the bias of the same layer
        zero = opts.readout_zero_init and (role == "output" or (pu.kind == "bias" and pu.module in readout_modules))
        init_kind, base_std = _init(model, name, shape, pu, role, m, base_shape, scheme, opts, zero)
        const = _const(model, pu, role, opts.output_mult) * (UN.unit_const(pu.kind, role, shape) if scheme.unit else 1.0)
        tensors.append(TensorPlan(name, shape, role, pu.kind, m, ex.a, ex.b, ex.c_sgd, ex.c_adam, init_kind, base_std,
                                  const, pu.module, pu.attr))
        for i, (u, r) in enumerate(zip(ulist, found)):
            if i != p:
                extra.append(UsePlan(u.name, name, u.module, u.attr, r, u.kind, m, scheme[r].a,
                                     _const(model, u, r, opts.output_mult)))
    if missing:
        raise ValueError(
            "paramlab cannot tell the role of these parameters (not Linear/Conv/Embedding/norm weights): "
            + "; ".join(missing)
            + ". Pass roles={name: 'input'|'hidden'|'output'|'vector'|'scalar'} (fnmatch patterns work)"
        )
    sites = A.find_sites(model, base, scheme, attention, attn_mult)
    plan = Plan(scheme, tuple(tensors), tuple(extra), sites)
    TI.warn_large_tied_logits(plan)
    dplan = DP.resolve(model, plan, depth_scaling, base_depth, branches, blocks, depth)
    return plan if dplan is None else Plan(scheme, plan.tensors, plan.uses, sites, dplan)


def _check_role_names(roles: Mapping[str, str] | None, uses: dict) -> None:
    """Every name or pattern in roles= matches a parameter or one of its uses (a typo is refused)."""
    use_names = {u.name for us in uses.values() for u in us} | set(uses)
    for n in (roles or {}):
        if n not in use_names and not any(fnmatch.fnmatchcase(k, n) for k in use_names):
            raise ValueError(f"roles= names {n!r}, which matches no parameter of the model")


def _use_role(use, wd, roles: Mapping[str, str] | None) -> str | None:
    """The role of one use of a tensor: its roles= tag, checked against the role its width dims `wd` give
    (a disagreement is refused), else the inferred role; None when neither says."""
    inferred = R.infer_role(use.kind, wd)
    tag = match_pattern(use.name, roles)
    if tag is not None and tag not in ROLES:
        raise ValueError(f"roles[{use.name!r}] = {tag!r} is not a role: roles are {', '.join(ROLES)}")
    if tag is not None and inferred is not None and tag != inferred:
        raise ValueError(
            f"parameter {use.name!r}: tagged {tag!r} but its width dims {wd} make it {inferred!r}; "
            "check the base/delta models or the tag"
        )
    return tag or inferred


def _init(model, name, shape, pu, role, m, base_shape, scheme, opts, zero) -> tuple[str, float]:
    """(init kind, std at base width) of a tensor: the SP default (`_default_init`), or opts.init's entry for
    it; refused where paramlab cannot know the base init (a 'keep' the scheme rescales, an unknown layout)."""
    init_kind, base_std = _default_init(pu.kind, role, name, base_shape, opts.gain, opts.readout_gain,
                                        opts.bias_std, opts.embedding_std, zero)
    override = match_pattern(name, opts.init)
    if override is not None:
        if isinstance(override, str):
            if override not in INIT_KINDS or override == "normal":
                raise ValueError(f"init[{name!r}] = {override!r}: give a base std (float) or one of zeros, ones, keep")
            init_kind, base_std = override, 0.0
        else:
            init_kind, base_std = "normal", float(override)
    ex = scheme[role]
    if init_kind == "keep" and ex.b != 0 and m != 1.0:
        raise ValueError(
            f"parameter {name!r} ({pu.kind}): paramlab does not know its base init, and scheme {scheme.name!r} "
            f"scales it by m^-{ex.b:g}. Give its std at the base width with init={{{name!r}: std}}"
        )
    if init_kind == "ambiguous":
        raise ValueError(
            f"parameter {name!r} {list(shape)} is held by a {type(_module(model, pu.module)).__name__} paramlab has no "
            "layout for, so it cannot tell which dims are its fan-in (it depends on how the forward uses it). "
            f"Give its std at the base width with init={{{name!r}: std}}, or init={{{name!r}: 'keep'}} to keep its values"
        )
    return init_kind, base_std


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def _const(model, use, role, output_mult) -> float:
    """The width-free forward constant of a use: output_mult on readouts; a mup MuReadout brings its own."""
    if use.layout is not None and use.layout.multiplier == "builtin":
        if output_mult != 1.0:
            raise ValueError(f"module {use.module!r} is a mup MuReadout with its own output_mult: leave paramlab's "
                             "output_mult at 1 (set MuReadout(output_mult=...) instead)")
        return float(getattr(_module(model, use.module), "output_mult", 1.0)) if use.attr == "weight" else 1.0
    return output_mult if role == "output" else 1.0


def _default_init(kind, role, name, base_shape, gain, readout_gain, bias_std, embedding_std, zero):
    """(init kind, std at base width) for one parameter: the SP network every scheme equals at m = 1."""
    if zero:
        return "zeros", 0.0
    if kind in ("linear", "linear_t", "conv"):
        g = readout_gain if role == "output" else gain
        return "normal", g / math.sqrt(fan_in(kind, base_shape))
    if kind == "embedding":
        return "normal", embedding_std
    if kind == "bias":
        return ("normal", bias_std) if bias_std > 0 else ("zeros", 0.0)
    if kind == "norm":
        return ("ones", 0.0) if name.endswith("weight") else ("zeros", 0.0)
    if role in ("vector", "scalar") or len(base_shape) < 2:
        return "keep", 0.0
    if base_shape[0] == math.prod(base_shape[1:]):  # square: fan-in is the same whichever way it is used
        return "normal", gain / math.sqrt(base_shape[0])
    return "ambiguous", 0.0


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
    params = dict(W.named_parameters(model))
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
    attention="auto",
    attn_mult=None,
    check_forward: bool = True,
    depth_scaling=None,
    base_depth: int | None = None,
    branches=None,
    blocks=None,
    depth: int | None = None,
    **options,
) -> nn.Module:
    """Apply `scheme` to `model` in place and return it.

    Args:
        model: any nn.Module, also inside DDP or torch.compile (unwrapped via `.module` / `_orig_mod`).
        scheme: a `Scheme` or preset name ('sp', 'sp-stable', 'ntk', 'mf', 'mup', 'lazy-rich-<alpha>', 'u-mup').
        base: the same architecture at the base width (an nn.Module, on device='meta' is fine), a dict
            name -> shape, a `mup` .bsh file, or None for a model already set up by `mup.set_base_shapes`.
        delta: the architecture at a second width, to mark width dims when `model` is at the base width.
        roles: name (or fnmatch pattern) -> role, for parameters paramlab cannot classify and as a check.
            A tied tensor's further uses are named as their module spells them (e.g. 'lm_head.weight').
        reinit: draw fresh weights from the scheme (False keeps the current values, e.g. before loading
            a checkpoint, or to keep weights copied from another model).
        seed: seed of the init draws (default: torch's global RNG).
        options: the `PlanOptions` keywords, the network at the base width: gain (default 1 here;
            sqrt(2) for a ReLU net), readout_gain, output_mult, bias_std, embedding_std,
            readout_zero_init, init (see `paramlab.plan_options`).
        attention: 'auto' (the scheme's logit scale on every attention paramlab can set, refusing the
            others), 'keep' (leave every attention scale as the model has it), or a dict
            {module name or pattern: head dim at the base width, or 'keep'} (see `paramlab.attention`).
        attn_mult: the builders' attention constant for foreign attention too: logits = q.k * attn_mult /
            sqrt(d_head_base) * (d_head_base/d_head)^attn, in place of the model's own base scale (a float,
            or {module name or pattern: float}). None keeps the model's own (see docs/peers.md).
        check_forward: check the first forward pass for tensors used outside the modules that hold them
            and for attention paramlab cannot scale (see `paramlab.audit`; off for paramlab's own models).
        depth_scaling: a depth rule (`paramlab.depth`): None (no depth scaling), 'depth-mup' (alpha 1/2),
            'completep' (alpha 1), a float alpha in [1/2, 1] or a `DepthRule`. It multiplies every
            branch output by (depth/base_depth)^-alpha and gives the tensors inside the residual blocks
            the rule's lr and Adam-eps factors (applied by `paramlab.optimizer`).
        branches: fnmatch pattern(s) of the modules whose whole output enters a residual sum (e.g.
            ['blocks.*.attn.o', 'blocks.*.mlp.proj']); required with depth_scaling. With depth_scaling
            None they only record the structure (the depth coordinate check reads it).
        base_depth: the number of residual blocks the hyperparameters were tuned at (default: this
            model's, i.e. no scaling). depth: the number of residual blocks, as a check (it is counted
            from the blocks the branches live in). blocks: pattern(s) of the residual blocks' parameter
            names, if not each branch's block ('blocks.3.attn.o' -> 'blocks.3.*').

    Raises ValueError if `model` is already parameterized, if a parameter has no role, or where the
    scheme cannot be applied (each message names the fix).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"parameterize expects an nn.Module, got {type(model).__name__}")
    kinds = W.wrapper_kinds(model)
    if "fsdp1" in kinds:
        raise ValueError(
            "this model is wrapped in FSDP (FullyShardedDataParallel), which has flattened and sharded its parameters: "
            "call paramlab.parameterize on the model before wrapping it (paramlab.optimizer and role_table accept the "
            "wrapped model afterwards)"
        )
    if "ddp" in kinds and reinit and seed is None:
        raise ValueError(
            "this model is wrapped in DistributedDataParallel, and a fresh init drawn now would differ between ranks: "
            "pass seed= (the same on every rank), or parameterize before wrapping (DDP then broadcasts rank 0's weights)"
        )
    wrapped, model = model, W.unwrap(model)
    if getattr(model, PLAN_ATTR, None) is not None:
        raise ValueError(
            "this model is already parameterized (it has a paramlab plan): build a fresh model, or call "
            "paramlab.unparameterize(model) first to remove the old multipliers"
        )
    if MU.has_hooks(model) or DP.has_hooks(model):
        raise ValueError(
            "a submodule of this model already carries paramlab multipliers (it was parameterized on its own): "
            "call paramlab.unparameterize on it first, or parameterize only the whole model"
        )
    plan = make_plan(model, scheme, base, delta, roles=roles, attention=attention, attn_mult=attn_mult,
                     depth_scaling=depth_scaling, base_depth=base_depth, branches=branches, blocks=blocks, depth=depth,
                     **options)
    try:  # first: it raises for uses it cannot scale, before any weight changes
        MU.install(model, plan)
        DP.install(model, plan.depth)  # after the width hooks: scales the branch's whole output
    except Exception:
        MU.remove(model)
        DP.remove(model)
        raise
    if reinit:
        initialize(model, plan, seed=seed)
    A.apply(model, plan.attention)
    if check_forward and not type(model).__module__.startswith("paramlab."):
        AU.install(model, plan, check_attention=attention != "keep")
    RP.stamp(model, plan)
    model.__dict__[PLAN_ATTR] = plan
    GU.watch(model, plan)  # a plan-blind optimizer warns at its first step (paramlab.guard)
    return wrapped
