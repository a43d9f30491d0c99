"""Forward multipliers: how a use's m^-a is put into the module's forward, per layout.

Each module gets at most one paramlab hook (or one pair, for nn.MultiheadAttention), built from the
multipliers of the tensors it uses (`Layout.multiplier`, see `paramlab.layouts`):

    input    x -> w_mult * x before the layer (Linear, Conv, HF Conv1D: linear in x, so the bias is left
             alone, as mup's MuReadout does); when the bias's own multiplier differs:
             out -> w_mult * out + (b_mult - w_mult) * bias
    output   out -> w_mult * out + (b_mult - w_mult) * bias (Embedding, norm layers)
    mha      query/key/value inputs scaled by the multiplier of the projection weight that reads them
             (their biases must keep multiplier 1); the attention output by out_proj's multipliers, as
             out -> w_mult * out + (b_mult - w_mult) * out_proj.bias (F.multi_head_attention_forward reads
             out_proj.weight directly, so a hook on out_proj itself would never fire)
    builtin  the module's own multiplier (mup's MuReadout: output_mult / width_mult()) must equal the
             plan's; nothing is installed
    managed  set by the module's owner from the plan (paramlab's TiedReadout); nothing is installed

Hooks read the parameters at call time, so deepcopy, state_dict, torch.compile and torch.func keep
working. `paramlab.export.fold` bakes the same numbers into the tensors instead.
"""

from __future__ import annotations

from torch import nn

from .layouts import UNKNOWN, layout_of


class InputScale:
    """forward pre-hook: x -> scale * x (for layers linear in their input, e.g. Linear, Conv)."""

    def __init__(self, scale: float):
        self.scale = float(scale)

    def __call__(self, module, args):
        # one multiply of the input (bit-for-bit mup's MuReadout for a power-of-2 width_mult); a single
        # argument, the usual call, skips building the tail
        if len(args) == 1:
            return (args[0] * self.scale,)
        return (args[0] * self.scale,) + tuple(args[1:])


class OutputAffine:
    """forward hook: out -> w_mult * out + (b_mult - w_mult) * bias (bias broadcast on `bias_dim`).

    `bias_attr` names the bias the affine part uses (default the module's own `bias`).
    """

    def __init__(self, w_mult: float, b_mult: float = 1.0, bias_dim: int = -1, bias_attr: str = "bias"):
        self.w_mult, self.b_mult, self.bias_dim, self.bias_attr = float(w_mult), float(b_mult), bias_dim, bias_attr

    def _bias(self, module):
        obj = module
        for part in self.bias_attr.split("."):
            obj = getattr(obj, part, None)
        return obj

    def affine(self, module, out):
        out = out * self.w_mult
        bias = self._bias(module)
        if bias is not None and self.b_mult != self.w_mult:
            shape = [1] * out.dim()
            if self.bias_dim == -1:  # bias covers the trailing dims (Linear, LayerNorm)
                shape[out.dim() - bias.dim():] = bias.shape
            else:
                shape[self.bias_dim] = bias.shape[0]
            out = out + (self.b_mult - self.w_mult) * bias.reshape(shape)
        return out

    def __call__(self, module, args, out):
        return self.affine(module, out)


class MHAInputScale:
    """forward pre-hook of nn.MultiheadAttention: query, key, value scaled by their projections' multipliers.

    A self-attention call passes one tensor three times; it is scaled once and passed on three times,
    so that the module's `query is key` fast paths still see one tensor.
    """

    def __init__(self, q: float, k: float, v: float):
        self.q, self.k, self.v = float(q), float(k), float(v)

    def __call__(self, module, args, kwargs):
        names = ("query", "key", "value")
        vals = list(args[:3]) + [kwargs.get(n) for n in names[len(args[:3]):]]
        scaled, done = [], {}
        for x, s in zip(vals, (self.q, self.k, self.v)):
            if x is None or s == 1.0:
                scaled.append(x)
                continue
            key = (id(x), s)
            if key not in done:
                done[key] = x * s
            scaled.append(done[key])
        n_pos = len(args[:3])
        new_args = tuple(scaled[:n_pos]) + tuple(args[3:])
        new_kwargs = dict(kwargs)
        for n, x in zip(names[n_pos:], scaled[n_pos:]):
            if n in kwargs:
                new_kwargs[n] = x
        return new_args, new_kwargs


class MHAOutputAffine(OutputAffine):
    """forward hook of nn.MultiheadAttention: the attention output (first of the returned pair) through out_proj's affine."""

    def __call__(self, module, args, out):
        return (self.affine(module, out[0]),) + tuple(out[1:])


HOOK_TYPES = (InputScale, OutputAffine, MHAInputScale)


def module_mults(plan) -> dict[str, dict[str, float]]:
    """module name -> {attribute: forward multiplier} over every use of every tensor in the plan."""
    out: dict[str, dict[str, float]] = {}
    for t in plan.tensors:
        mod, attr = t.module, t.attr
        out.setdefault(mod, {})[attr] = t.mult
    for u in plan.uses:
        out.setdefault(u.module, {})[u.attr] = u.mult
    return out


def _refuse(mname, mod, bad, why):
    raise ValueError(
        f"parameters {bad} need forward multipliers, but {why} (module {mname!r} is a {type(mod).__name__}). Use the "
        "equivalent scheme without multipliers, scheme.canonical() (same training dynamics), or put the parameter in "
        "a supported layer (Linear, Conv, Embedding, norm layers, HF Conv1D)"
    )


def install(model: nn.Module, plan) -> None:
    """Install every multiplier of `plan` on `model` (raises for a use paramlab cannot scale)."""
    modules = dict(model.named_modules())
    for mname, mults in module_mults(plan).items():
        mod = modules[mname]
        layout = layout_of(mod)
        how = layout.multiplier
        prefix = f"{mname}." if mname else ""
        if how == "builtin":
            _check_builtin(mname, mod, mults)
            continue
        if how == "managed" or all(v == 1.0 for v in mults.values()):
            continue
        if how in ("input", "output"):
            w_mult = mults.get("weight", 1.0)
            b_mult = mults.get("bias", w_mult)
            extra = sorted(set(mults) - {"weight", "bias"})
            if extra:
                _refuse(mname, mod, [prefix + e for e in extra if mults[e] != 1.0], "paramlab only scales weight and bias here")
            if how == "input" and (b_mult == 1.0 or getattr(mod, "bias", None) is None):
                mod.register_forward_pre_hook(InputScale(w_mult))
            else:
                mod.register_forward_hook(OutputAffine(w_mult, b_mult, layout.bias_dim))
        elif how == "mha":
            _install_mha(mname, mod, mults)
        else:
            bad = [prefix + a for a, v in mults.items() if v != 1.0]
            _refuse(mname, mod, bad, "paramlab has no layout for this module type" if layout is UNKNOWN
                    else f"paramlab cannot install them on a {layout.name} layout")


def _check_builtin(mname, mod, mults) -> None:
    """mup's MuReadout divides by width_mult() itself: the plan's multiplier must be exactly that."""
    try:
        own = float(mod.output_mult) / float(mod.width_mult())
    except (AssertionError, AttributeError):
        raise ValueError(
            f"module {mname!r} is a mup {type(mod).__name__}, whose forward reads its width from mup's infshape: call "
            "mup.set_base_shapes(model, base) before paramlab.parameterize (paramlab then takes the width dims from it), "
            "or replace it by an nn.Linear with the same weight and bias"
        ) from None
    want = mults.get("weight", 1.0)
    if abs(want - own) > 1e-12 * max(1.0, abs(own)) or mults.get("bias", 1.0) != 1.0:
        raise ValueError(
            f"module {mname!r} is a mup {type(mod).__name__}: it multiplies its input by output_mult / width_mult() = "
            f"{own:.6g} itself, but the scheme gives this readout the multiplier {want:.6g}. A MuReadout fits schemes whose "
            "readout multiplier is 1/m (mup, mf; paramlab's output_mult must stay 1, MuReadout has its own). For other "
            "schemes replace it by an nn.Linear with the same weight and bias (paramlab then installs the scheme's multiplier)"
        )


def _install_mha(mname, mod, mults) -> None:
    prefix = f"{mname}." if mname else ""
    biases = {a: v for a, v in mults.items() if a in ("in_proj_bias", "bias_k", "bias_v") and v != 1.0}
    if biases:
        _refuse(mname, mod, [prefix + a for a in biases],
                "nn.MultiheadAttention adds these after its projections, where paramlab has no hook")
    if mod._qkv_same_embed_dim:
        q = k = v = mults.get("in_proj_weight", 1.0)
    else:
        q, k, v = (mults.get(f"{x}_proj_weight", 1.0) for x in "qkv")
    if (q, k, v) != (1.0, 1.0, 1.0):
        mod.register_forward_pre_hook(MHAInputScale(q, k, v), with_kwargs=True)
    o_w = mults.get("out_proj.weight", 1.0)
    o_b = mults.get("out_proj.bias", o_w)
    if (o_w, o_b) != (1.0, 1.0):
        mod.register_forward_hook(MHAOutputAffine(o_w, o_b, -1, bias_attr="out_proj.bias"))


def remove(model: nn.Module) -> None:
    """Remove every paramlab multiplier hook from `model`'s modules."""
    for mod in model.modules():
        for hooks in (mod._forward_pre_hooks, mod._forward_hooks):
            for k in [k for k, h in hooks.items() if isinstance(h, HOOK_TYPES)]:
                del hooks[k]
                getattr(mod, "_forward_pre_hooks_with_kwargs", {}).pop(k, None)


def has_hooks(model: nn.Module) -> bool:
    return any(isinstance(h, HOOK_TYPES) for mod in model.modules()
               for h in list(mod._forward_pre_hooks.values()) + list(mod._forward_hooks.values()))
