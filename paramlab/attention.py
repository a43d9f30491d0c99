"""The attention-logit scale of attention paramlab did not build.

A scheme's `attn` exponent fixes how the logit scale extrapolates with the head dim (TP5 Def. 4.1:
1/d attention for muP and MF, 1/sqrt(d) for SP and NTK). As for every other number, the network at
the base width is the model's own, and the scheme only says how it changes with width:

    scale(d_head) = scale_base * (d_head_base / d_head) ** attn

where scale_base is the scale the model uses at the base width. paramlab's own Transformer does the
same (`models/transformer.py`, with scale_base = attn_mult / sqrt(d_head_base)). `attn_mult=` gives
every foreign attention that meaning too: scale_base = attn_mult / sqrt(d_head_base) replaces the
model's own base constant, so a peer's convention is one number (nanoGPT-mup's q.k / d_head at every
width is attn_mult = d_head_base^-1/2; see docs/peers.md). A float applies to every site, a dict
{module name or pattern: attn_mult} to the sites it names. Per attention module (an `AttentionSite`
in the plan):

    hf     HF transformers attention (GPT-2, Llama and the families that copy it): the module's float
           `scaling`, which every attention implementation (eager, sdpa, flash, flex) reads. scale_base and
           d_head_base are read from the same module of the base model, so GPT-2's
           scale_attn_by_inverse_layer_idx and any other constant carry over.
    sdpa   a module whose forward calls torch.nn.functional.scaled_dot_product_attention (found in its
           bytecode, and in functions of its own source file that it calls): the call's `scale` is set
           while the module runs, through a TorchFunctionMode entered by a forward pre-hook. The model's
           call must use sdpa's default scale 1/sqrt(E) (scale=None, or that value): a scale the model
           computes itself may already depend on width, and is refused. d_head_base comes from the base
           module's head-dim attributes (head_dim, d_head, ...; or embedding size / number of heads) or
           from attention={name: d_head_base}.
    mha    nn.MultiheadAttention: its scale is fixed at 1/sqrt(head_dim) inside the functional call (and its
           fused fast paths), so a scheme that needs another scale is refused unless the user opts out.
    keep   the user opted out (attention="keep" or attention={name: "keep"}): the model's scale is left alone.

Hand-written attention (softmax(q @ k.T * s)) has no hook point: the first-forward check
(`paramlab.audit`) refuses a 4-D softmax outside a known attention module.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import inspect
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .layouts import UNKNOWN, layout_of
from .patterns import match_pattern

HEAD_DIM_ATTRS = ("head_dim", "d_head", "head_size", "attention_head_size", "dim_head")
EMBED_ATTRS = ("n_embd", "embed_dim", "d_model", "hidden_size", "n_embed", "dim")
HEADS_ATTRS = ("n_head", "n_heads", "num_heads", "num_attention_heads", "nhead", "heads")
SDPA = "scaled_dot_product_attention"


@dataclass(frozen=True)
class AttentionSite:
    """One attention module and the logit scale paramlab gives it (see the module docstring)."""

    module: str
    how: str  # hf, sdpa, mha, keep
    d_head: int | None
    d_head_base: float | None
    scale_base: float | None  # the model's scale at the base width (sdpa: d_head_base^-1/2)
    attn: float
    original: float | None = None  # hf: the module's own `scaling`, restored by unparameterize

    @property
    def ratio(self) -> float | None:
        """d_head / d_head_base (None if unknown)."""
        return None if self.d_head is None or not self.d_head_base else self.d_head / self.d_head_base

    @property
    def scale(self) -> float | None:
        """scale_base * (d_head_base / d_head) ** attn: the logit scale this module uses (None: its own)."""
        if self.how in ("keep", "mha") or self.scale_base is None or self.ratio is None:
            return None
        return self.scale_base * self.ratio ** (-self.attn)

    def row(self) -> str:
        name = self.module or "(root)"
        d = f"d_head {self.d_head or '(read at the call)'}" + (f" (base {self.d_head_base:g})" if self.d_head_base else "")
        if self.how == "keep":
            return f"{name}: {d}, scale left as the model has it (attention='keep')"
        if self.how == "mha":
            return f"{name}: {d}, nn.MultiheadAttention keeps 1/sqrt(d_head) (the scheme's law here)"
        scale = f"{self.scale:.4g}" if self.scale is not None else "set at the call"
        return f"{name}: {d}, scale {scale} = {self.scale_base:.4g} * (d_head_base/d_head)^{self.attn:g} [{self.how}]"


# -- finding attention ------------------------------------------------------------------------------


def _mentions(code, name: str, glb: dict, cls: type, depth: int, seen: set) -> bool:
    """Whether `code` uses `name`, or a nested function, a method of `cls` or a function of the same source
    module that it calls does (up to `depth` calls deep)."""
    if id(code) in seen:
        return False
    seen.add(id(code))
    if name in code.co_names:
        return True
    for c in code.co_consts:
        if inspect.iscode(c) and _mentions(c, name, glb, cls, depth, seen):
            return True
    if depth > 0:
        for n in code.co_names:
            f = getattr(cls, n, None)
            if not inspect.isfunction(f):
                f = glb.get(n)
                if not (inspect.isfunction(f) and f.__module__ == cls.__module__):
                    continue
            if _mentions(f.__code__, name, f.__globals__, cls, depth - 1, seen):
                return True
    return False


def calls_sdpa(module: nn.Module) -> bool:
    """Whether the module's forward calls scaled_dot_product_attention (by its bytecode; torch's own modules excluded)."""
    cls = type(module)
    fwd = getattr(cls, "forward", None)
    if not inspect.isfunction(fwd) or cls.__module__.startswith("torch."):
        return False
    return _mentions(fwd.__code__, SDPA, fwd.__globals__, cls, 2, set())


def head_dim_of(module: nn.Module) -> int | None:
    """A module's head dim from its attributes (head_dim, d_head, ...; or embedding size / number of heads)."""
    for a in HEAD_DIM_ATTRS:
        v = getattr(module, a, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    e = next((getattr(module, a) for a in EMBED_ATTRS if isinstance(getattr(module, a, None), int)), None)
    h = next((getattr(module, a) for a in HEADS_ATTRS if isinstance(getattr(module, a, None), int)), None)
    if e and h and e % h == 0:
        return e // h
    return None


def _option(name: str, attention) -> object:
    if isinstance(attention, str):
        return attention
    v = match_pattern(name, attention)
    return "auto" if v is None else v


def check_option(attention, model: nn.Module) -> None:
    if isinstance(attention, str):
        if attention not in ("auto", "keep"):
            raise ValueError(f"attention={attention!r}: use 'auto' (set the scheme's scale), 'keep' (leave every "
                             "attention scale as the model has it) or a dict {module name or pattern: d_head_base or 'keep'}")
        return
    if not isinstance(attention, Mapping):
        raise TypeError(f"attention must be 'auto', 'keep' or a dict, got {type(attention).__name__}")
    names = [n for n, _ in model.named_modules()]
    for k, v in attention.items():
        if not any(n == k or fnmatch.fnmatchcase(n, k) for n in names):
            raise ValueError(f"attention= names {k!r}, which matches no module of the model")
        if v not in ("keep", "auto") and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
            raise ValueError(f"attention[{k!r}] = {v!r}: give the head dim at the base width (a positive number) or 'keep'")


def _attn_mult(name: str, attn_mult) -> float | None:
    """The attn_mult= value for one site (None: the model's own base scale)."""
    if attn_mult is None or not isinstance(attn_mult, Mapping):
        return attn_mult
    v = _option(name, attn_mult)
    return None if v == "auto" else v


def check_attn_mult(attn_mult, model: nn.Module, attention) -> None:
    if attn_mult is None:
        return
    if attention == "keep":
        raise ValueError("attn_mult= with attention='keep': 'keep' leaves every attention scale as the model has it; "
                         "drop one of the two")
    values = dict(attn_mult) if isinstance(attn_mult, Mapping) else {"": attn_mult}
    names = [n for n, _ in model.named_modules()]
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and v < float("inf")):
            raise ValueError(f"attn_mult{'[' + repr(k) + ']' if k else ''} = {v!r}: give a positive number (logits = "
                             "q.k * attn_mult / sqrt(d_head_base) * (d_head_base/d_head)^attn)")
        if k and not any(n == k or fnmatch.fnmatchcase(n, k) for n in names):
            raise ValueError(f"attn_mult= names {k!r}, which matches no module of the model")


def find_sites(model: nn.Module, base, scheme, attention="auto", attn_mult=None) -> tuple[AttentionSite, ...]:
    """Every attention module of `model` with the scale the scheme gives it; raises where paramlab cannot set it.

    `base` is the base model (its modules give d_head_base and the base scale) or None / a dict of
    shapes (then only schemes that keep 1/sqrt(d_head) are possible without attention={name: d_head_base}).
    `attn_mult` (a float, or {name or pattern: float}): scale_base = attn_mult / sqrt(d_head_base) instead
    of the model's own base scale (see the module docstring).
    """
    check_option(attention, model)
    check_attn_mult(attn_mult, model, attention)
    base_mods = dict(base.named_modules()) if isinstance(base, nn.Module) else {}
    sites = []
    for name, mod in model.named_modules():
        layout = layout_of(mod)
        how = layout.attention or ("sdpa" if layout is UNKNOWN and calls_sdpa(mod) else None)
        if how == "managed" and _attn_mult(name, attn_mult) not in (None, 1.0):
            raise ValueError(f"module {name!r} is paramlab's own attention: its model's attn_mult sets the constant "
                             "(build it with Transformer(..., attn_mult=...) or paramlab.transformer(..., attn_mult=...))")
        if how is None or how == "managed":
            continue
        opt = _option(name, attention)
        given = float(opt) if isinstance(opt, (int, float)) and not isinstance(opt, bool) else None
        d = mod.head_dim if how in ("hf", "mha") else head_dim_of(mod)
        bmod = base_mods.get(name)
        d0 = given if given is not None else (
            (bmod.head_dim if how in ("hf", "mha") else head_dim_of(bmod)) if bmod is not None else None)
        if scheme.unit:  # u-muP's frame (paramlab.unit): base head dim 1, logits = q.k * attn_mult / d_head^attn
            d0, bmod = 1.0, None
        if opt == "keep":
            sites.append(AttentionSite(name, "keep", d, d0, None, scheme.attn))
            continue
        where = f"module {name!r} ({type(mod).__name__})"
        mult = _attn_mult(name, attn_mult)
        if how == "mha" and mult is not None and mult != 1.0:
            raise ValueError(f"{where}: nn.MultiheadAttention fixes its logit scale at 1/sqrt(head_dim) inside the "
                             f"functional call, so attn_mult={mult:g} cannot be set on it. Use an attention module that "
                             "calls F.scaled_dot_product_attention, or scale its query weights yourself")
        if how == "mha":
            if scheme.attn != 0.5 and (d0 is None or d != d0):
                raise ValueError(
                    f"{where}: nn.MultiheadAttention fixes its logit scale at 1/sqrt(head_dim) inside the functional "
                    f"call, but scheme {scheme.name!r} scales attention logits like 1/d_head^{scheme.attn:g}"
                    + ("" if d0 is not None else " (and paramlab cannot tell its head dim at the base width: base= is not a module)")
                    + ". Pass attention='keep' to train with 1/sqrt(d_head) anyway (e.g. to compare), or use an attention "
                    "module that calls F.scaled_dot_product_attention (paramlab then sets its scale)"
                )
            sites.append(AttentionSite(name, "mha", d, d0, None, scheme.attn))
            continue
        if d is None and given is None:
            raise ValueError(
                f"{where} calls scaled_dot_product_attention, but paramlab cannot tell its head dim (no attribute "
                f"among {HEAD_DIM_ATTRS}, nor an embedding size and a number of heads). Give the module a `head_dim` "
                f"attribute, pass attention={{{name!r}: d_head_base}}, or attention='keep'"
            )
        if d0 is None:
            raise ValueError(
                f"{where}: paramlab needs its head dim at the base width to set the scheme's attention scale. Pass "
                f"base= as a module (built on device='meta' is fine), or attention={{{name!r}: d_head_base}}, or "
                "attention='keep' to leave the model's scale as it is"
            )
        if how == "hf":
            if mult is not None or scheme.unit:
                mult = 1.0 if mult is None else mult
                scale_base = float(mult) / float(d0) ** 0.5
            elif bmod is not None:
                scale_base = float(bmod.scaling)
            elif abs(mod.scaling * d ** 0.5 - 1.0) < 1e-9:  # the module uses 1/sqrt(head_dim): its base scale is d0^-1/2
                scale_base = float(d0) ** -0.5
            else:
                raise ValueError(f"{where}: its scaling {mod.scaling:.6g} is not 1/sqrt(head_dim), so paramlab needs the "
                                 "base model's module to read the base scale: pass base= as a module (device='meta' is fine)")
            sites.append(AttentionSite(name, "hf", d, d0, scale_base, scheme.attn, original=float(mod.scaling)))
        else:
            scale_base = (1.0 if mult is None else float(mult)) / float(d0) ** 0.5
            sites.append(AttentionSite(name, "sdpa", d, d0, scale_base, scheme.attn))
    return tuple(sites)


# -- applying --------------------------------------------------------------------------------------


class SDPAScale(TorchFunctionMode):
    """While a module runs: scaled_dot_product_attention calls get the site's scale (see the module docstring)."""

    def __init__(self, site: AttentionSite):
        super().__init__()
        self.site = site

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            args, kwargs = self._rescale(args, kwargs)
        return func(*args, **kwargs)

    def _rescale(self, args, kwargs):
        s = self.site
        e = args[0].shape[-1]
        if s.d_head is None:  # head dim only known at the call: d_head_base came from attention={name: d0}
            s = dataclasses.replace(s, d_head=e)
        if e != s.d_head:
            raise RuntimeError(
                f"module {s.module!r} called scaled_dot_product_attention with head dim {e}, but paramlab planned its "
                f"scale for head dim {s.d_head}: pass attention={{{s.module!r}: d_head_base}} with the right base size"
            )
        given = args[6] if len(args) > 6 else kwargs.get("scale")
        if given is not None and abs(float(given) / s.scale - 1.0) < 1e-9:
            return args, kwargs  # already the site's scale (e.g. a graph torch.compile traced through this mode)
        if given is not None and abs(float(given) * e ** 0.5 - 1.0) > 1e-6:
            raise RuntimeError(
                f"module {s.module!r} passes scale={float(given):.6g} to scaled_dot_product_attention (not sdpa's default "
                f"1/sqrt({e})). paramlab cannot tell whether that number already depends on width. Drop scale= (and "
                f"multiply the queries by your constant), or pass attention={{{s.module!r}: 'keep'}} if the module already "
                "applies the scheme's scale"
            )
        if len(args) > 6:
            args = args[:6] + (s.scale,) + tuple(args[7:])
        else:
            kwargs["scale"] = s.scale
        return args, kwargs


class SDPAEnter:
    """forward pre-hook: enter the site's SDPAScale mode (left by the paired SDPAExit, also on errors)."""

    def __init__(self, site: AttentionSite):
        self.site, self.stack = site, []

    def __call__(self, module, args):
        mode = SDPAScale(self.site)
        mode.__enter__()
        self.stack.append(mode)


class SDPAExit:
    def __init__(self, enter: SDPAEnter):
        self.enter = enter

    def __call__(self, module, args, out):
        if self.enter.stack:
            self.enter.stack.pop().__exit__(None, None, None)
        return None

    def __deepcopy__(self, memo):  # keep the pair together in copies of the model
        return SDPAExit(copy.deepcopy(self.enter, memo))


HOOK_TYPES = (SDPAEnter, SDPAExit)


def apply(model: nn.Module, sites) -> None:
    """Set every site's scale on `model`."""
    modules = dict(model.named_modules())
    for s in sites:
        mod = modules[s.module]
        if s.how == "hf":
            mod.scaling = s.scale
        elif s.how == "sdpa" and (s.d_head is None or s.scale != s.d_head ** -0.5):
            enter = SDPAEnter(s)
            mod.register_forward_pre_hook(enter)
            mod.register_forward_hook(SDPAExit(enter), always_call=True)


def restore(model: nn.Module, sites) -> None:
    """Undo `apply`: HF scalings back to the module's own, sdpa hooks removed."""
    modules = dict(model.named_modules())
    for s in sites:
        mod = modules.get(s.module)
        if mod is not None and s.how == "hf" and s.original is not None:
            mod.scaling = s.original
    for mod in model.modules():
        for hooks in (mod._forward_pre_hooks, mod._forward_hooks):
            for k in [k for k, h in hooks.items() if isinstance(h, HOOK_TYPES)]:
                del hooks[k]
                getattr(mod, "_forward_hooks_always_called", {}).pop(k, None)


def handled_modules(model: nn.Module, sites) -> set[int]:
    """ids of the modules whose attention scale paramlab knows (sites and paramlab's own attention)."""
    names = {s.module for s in sites}
    return {id(m) for n, m in model.named_modules() if n in names or layout_of(m).attention is not None}


# -- measuring -------------------------------------------------------------------------------------


class _LogitRecorder(TorchFunctionMode):
    def __init__(self, out):
        super().__init__()
        self.out, self.current = out, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and self.current:
            q, k = args[0], args[1] if len(args) > 1 else kwargs["key"]
            scale = args[6] if len(args) > 6 else kwargs.get("scale")
            scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
            if k.shape[-3] != q.shape[-3]:  # grouped-query attention: each key head serves several query heads
                k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            self.out[f"{self.current[-1]}.logits"] = (q @ k.transpose(-2, -1) * scale).detach()  # (B, H, Tq, Tk)
        return func(*args, **kwargs)


class attention_logits:
    """Context manager: records the attention logits q.k * scale (B, H, T_q, T_k), before any mask, of each
    attention module in the model's plan, as `{module}.logits` in the dict it yields.

    It sees the scaled_dot_product_attention calls of these modules (HF's default sdpa implementation,
    modules that call sdpa, nn.MultiheadAttention outside its fused fast path), with the scale paramlab
    set. paramlab's own Transformer exposes its logits as a module instead (`attn_logits=True`).
    """

    def __init__(self, model: nn.Module):
        plan = getattr(model, "paramlab_plan", None)
        self.model, self.sites = model, [s.module for s in (plan.attention if plan is not None else ())]
        self.out: dict[str, torch.Tensor] = {}

    def __enter__(self) -> dict:
        self.mode = _LogitRecorder(self.out)
        modules = dict(self.model.named_modules())
        self.handles = []
        for name in self.sites:
            mod = modules[name]
            self.handles.append(mod.register_forward_pre_hook(self._enter_site(name)))
            self.handles.append(mod.register_forward_hook(self._leave_site, always_call=True))
        self.mode.__enter__()
        return self.out

    def _enter_site(self, name):
        def hook(module, args):
            self.mode.current.append(name)
        return hook

    def _leave_site(self, module, args, out):
        self.mode.current.pop()

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        for h in self.handles:
            h.remove()
        return False
