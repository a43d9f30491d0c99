"""Export: a parameterized model as a plain module, multipliers folded into its weights, no hooks.

`fold(model)` returns a copy that computes the same function with no paramlab machinery, so a
model trained under muP can be saved and used by code that knows nothing about paramlab (an HF
model with `save_pretrained`, loaded back by plain `transformers.AutoModel.from_pretrained`; a
nanoGPT state_dict loaded by plain nanoGPT's `sample.py`):

    forward multipliers      W <- m^-a * W per use (and b <- m^-a_b * b), hooks removed
    tied tensors             uses with different multipliers (a tied embedding and readout under muP:
                             1 and 1/m) cannot share one folded tensor: the further use gets its own copy,
                             scaled by its multiplier, and an HF config gets tie_word_embeddings=False
                             (a plain model that ties the two back on load would lose the readout's 1/m:
                             load the folded state_dict into an untied model, or keep it parameterized)
    attention scale          the factor f = scale / scale_model_own is folded into the query projection
                             (rows of q, bias included; q.k then carries f): a separate q_proj / q_attn /
                             query / q / wq, or the query slice of a fused c_attn / qkv / qkv_proj / Wqkv
                             (nn.Linear rows [:E], HF Conv1D columns [:E]). HF modules get their own
                             `scaling` back; an sdpa caller goes back to sdpa's default 1/sqrt(d_head), and
                             fold checks the folded attention module against the parameterized one on a
                             random input (a fused layout whose first E outputs are not the queries would
                             fail it and is refused). Rotary embeddings are linear in q, so this is exact
    mup's MuReadout          replaced by an nn.Linear holding output_mult / width_mult() * W
    depth-rule branches      a branch module's output times m_L^-alpha (paramlab.depth): W <- m_L^-alpha W and
                             b <- m_L^-alpha b, exact for an affine module (Linear, ConvNd, HF Conv1D); any other
                             branch module is refused (its state_dict loaded into a plain model would silently
                             lose the multiplier)
    paramlab's builders      MLP, CNN, CBOW fold like any module; the Transformer's attention scales go into
                             each block's attn.q, and a tied readout (mult = output_mult * m^-a) is untied
                             into an nn.Linear: the folded model is a plain `Transformer(..., tied=False)`
                             (attn_mult 1, output_mult 1) and its state_dict loads into one

`fold(model, example=x)` also runs both models on `x` and refuses a folded model whose outputs differ.
What fold cannot bake into the weights is refused: a query normalized after its projection (q_norm),
an sdpa caller whose query projection fold cannot find or check, a depth branch that is not affine.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from . import attention as A
from . import audit as AU
from . import depth as DP
from . import multipliers as MU
from . import replaced as RP
from . import wrappers as W
from .layouts import layout_of
from .parameterize import PLAN_ATTR, get_plan


def fold(model: nn.Module, example=None) -> nn.Module:
    """A copy of `model` (unwrapped from DDP / compile) with every paramlab multiplier and attention
    scale folded into its weights and no paramlab hooks or plan; same outputs (see the module docstring).

    example: an input (or a tuple of inputs) to run both models on; fold raises if the outputs differ.
    """
    plan = get_plan(model)
    src = W.unwrap(model)
    out = copy.deepcopy(src)
    _check_branches(out, plan)
    managed = {n for n, m in out.named_modules() if layout_of(m).multiplier == "managed"}
    MU.remove(out)
    DP.remove(out)
    A.restore(out, plan.attention)
    AU.remove(out)
    RP.remove(out)
    del out.__dict__[PLAN_ATTR]
    with torch.no_grad():
        for mod in out.modules():
            if hasattr(mod, "fold_plan"):  # a builder's own numbers (paramlab's Transformer)
                mod.fold_plan(plan)
        _untie(out, plan, managed)
        _fold_multipliers(out, plan, managed)
        _fold_branches(out, plan)
        for site in plan.attention:
            _fold_attention(out, site, src, checked=example is not None)
        if hasattr(out, "apply_plan"):
            out.apply_plan(None)
    if example is not None:
        _check_example(src, out, example)
    return out


def _outputs(model, example):
    args = example if isinstance(example, tuple) else (example,)
    y = model(*args)
    y = getattr(y, "logits", y)
    return [t for t in (y if isinstance(y, (tuple, list)) else (y,)) if isinstance(t, torch.Tensor)]


def _tol(dtype: torch.dtype) -> float:
    return min(1e4 * torch.finfo(dtype).eps, 1e-2) if dtype.is_floating_point else 0.0


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    t = _tol(a.dtype)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=t, atol=t * float(b.abs().max()) if b.numel() else t))


class _Eval:
    """Modules in eval mode (no dropout) while a check runs; their training flags back afterwards."""

    def __init__(self, *mods):
        self.mods = mods

    def __enter__(self):
        self.flags = [[(m, m.training) for m in mod.modules()] for mod in self.mods]
        for mod in self.mods:
            mod.eval()

    def __exit__(self, *exc):
        for flags in self.flags:
            for m, t in flags:
                m.training = t
        return False


def _check_example(src, out, example) -> None:
    with torch.no_grad(), _Eval(src, out):
        want, got = _outputs(src, example), _outputs(out, example)
    if len(want) != len(got) or not all(_close(g, w) for g, w in zip(got, want)):
        raise ValueError("fold: the folded model's outputs on example= differ from the parameterized model's; paramlab "
                         "folded a scale into a tensor the model does not use that way. Keep the model parameterized")


def _untie(model: nn.Module, plan, managed=()) -> None:
    """Give each further use whose multiplier differs from its tensor's a tensor of its own."""
    own = {t.name: t.mult for t in plan.tensors}
    untied = []
    for u in plan.uses:
        if u.mult == own[u.tensor] or u.module in managed:
            continue
        path, _, attr = f"{u.module}.{u.attr}".strip(".").rpartition(".")
        holder = model.get_submodule(path) if path else model
        old = getattr(holder, attr)
        setattr(holder, attr, nn.Parameter(old.detach().clone(), requires_grad=old.requires_grad))
        untied.append(f"{u.name} (from {u.tensor})")
    cfg = getattr(model, "config", None)
    if untied and cfg is not None and hasattr(cfg, "tie_word_embeddings"):
        cfg.tie_word_embeddings = False  # plain transformers must not tie the two back when loading
    elif untied:  # no config to say so: a plain model that ties them in __init__ (nanoGPT) loads one of the two
        warnings.warn(f"fold: {', '.join(untied)} is a tensor of its own in the folded model (its multiplier differs "
                      "from the tied tensor's). Load the folded state_dict into an untied model: a model that ties "
                      "them back (nanoGPT's `wte.weight = lm_head.weight`) keeps one of the two on load_state_dict and "
                      "computes different outputs, with no error", stacklevel=3)


def _fold_multipliers(model: nn.Module, plan, managed=()) -> None:
    modules = dict(model.named_modules())
    done = set()
    for mname, mults in MU.module_mults(plan).items():
        if mname in managed:  # set by its model (fold_plan above)
            continue
        mod = modules[mname]
        if layout_of(mod).multiplier == "builtin":
            _replace_mu_readout(model, mname, mod, mults.get("weight", 1.0))
            continue
        for attr, mult in mults.items():
            p = mod.get_parameter(attr)
            if mult == 1.0 or id(p) in done:
                continue
            if layout_of(mod).multiplier == "managed":
                raise ValueError(f"module {mname!r} ({type(mod).__name__}) gets its multiplier from its model: fold it there")
            p.mul_(mult)
            done.add(id(p))


# Modules whose output is W-linear plus b: output * c == the same module with c W and c b.
_AFFINE = (nn.Linear, nn.modules.conv._ConvNd)


def _is_affine(mod: nn.Module) -> bool:
    return isinstance(mod, _AFFINE) or (type(mod).__name__ == "Conv1D" and type(mod).__module__.startswith("transformers."))


def _check_branches(model: nn.Module, plan) -> None:
    """Refuse, before anything is changed, a depth-rule branch fold cannot bake into its weights."""
    dplan = plan.depth
    if dplan is None or dplan.branch_mult == 1.0:
        return
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    for n in dplan.branches:
        mod = model.get_submodule(n)
        if not _is_affine(mod):
            raise ValueError(
                f"fold cannot put the depth rule's branch multiplier {dplan.branch_mult:.4g} into {n!r} "
                f"({type(mod).__name__}): only an affine module's output (Linear, ConvNd, HF Conv1D) is its weights' "
                "multiple. Name the branch's last affine layer in branches=, or keep the model parameterized")
        if any(counts[id(p)] > 1 for p in mod.parameters(recurse=False)):
            raise ValueError(f"branch module {n!r} shares a tensor with another module: fold cannot scale one use only")


def _fold_branches(model: nn.Module, plan) -> None:
    """Each branch module's weight and bias times the depth rule's m_L^-alpha (see _check_branches)."""
    dplan = plan.depth
    if dplan is None or dplan.branch_mult == 1.0:
        return
    for n in dplan.branches:
        for p in model.get_submodule(n).parameters(recurse=False):
            p.mul_(dplan.branch_mult)


def _replace_mu_readout(model, mname, mod, mult) -> None:
    lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None,
                    device=mod.weight.device, dtype=mod.weight.dtype)
    lin.weight.copy_(mod.weight * mult)
    if mod.bias is not None:
        lin.bias.copy_(mod.bias)
    parent, _, child = mname.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, lin)


# a separate query projection, and fused q | k | v projections whose first outputs are the queries
_Q_NAMES = ("q_proj", "q_attn", "query", "q", "wq")
_FUSED_NAMES = ("c_attn", "qkv", "qkv_proj", "Wqkv")


def _query_rows(mod: nn.Module, site) -> list[tuple[torch.Tensor, tuple]] | None:
    """(tensor, index) pairs holding the query outputs of attention module `mod`, or None if not found."""
    if getattr(mod, "is_cross_attention", False) and isinstance(getattr(mod, "q_attn", None), nn.Module):
        names = ("q_attn",)
    else:
        names = _Q_NAMES
    for n in names:
        q = getattr(mod, n, None)
        if isinstance(q, nn.Linear) or (isinstance(q, nn.Module) and _is_affine(q)):
            return [(p, (slice(None),)) for p in q.parameters(recurse=False)]
    heads = next((getattr(mod, a) for a in A.HEADS_ATTRS if isinstance(getattr(mod, a, None), int)), None)
    for n in _FUSED_NAMES:
        f = getattr(mod, n, None)
        if f is None or not _is_affine(f):
            continue
        conv1d = not isinstance(f, nn.Linear)
        n_out = f.weight.shape[1] if conv1d else f.weight.shape[0]
        e = getattr(mod, "embed_dim", None) if conv1d else None
        e = e or (heads * site.d_head if heads and site.d_head else (n_out // 3 if n_out % 3 == 0 else None))
        if not e:
            return None
        rows = [(f.weight, (slice(None), slice(0, e)) if conv1d else (slice(0, e),))]
        if f.bias is not None:
            rows.append((f.bias, (slice(0, e),)))
        return rows
    return None


def _fold_attention(model: nn.Module, site, src: nn.Module, checked: bool = False) -> None:
    """The factor scale / scale_model_own into the query rows of the site's module (see the module docstring)."""
    if site.how in ("keep", "mha"):
        return
    mod = model.get_submodule(site.module) if site.module else model
    own = site.original if site.how == "hf" else (site.d_head ** -0.5 if site.d_head else None)
    if own is None or site.scale is None:
        raise ValueError(f"fold cannot tell the attention scale of {site.module!r} ({type(mod).__name__}): its head dim "
                         "is only known at the call. Give the module a head_dim attribute, or keep it parameterized")
    f = site.scale / own
    if f == 1.0:
        return
    where = f"{site.module!r} ({type(mod).__name__})"
    if getattr(mod, "q_norm", None) is not None:
        raise ValueError(f"{where} normalizes its queries after the projection (q_norm): fold cannot put the attention "
                         "factor into the query projection; keep the model parameterized")
    rows = _query_rows(mod, site)
    if rows is None:
        raise ValueError(f"fold does not know the query projection of {where} (none of {_Q_NAMES + _FUSED_NAMES}): "
                         "multiply it by the factor yourself, or keep the model parameterized")
    for p, idx in rows:
        p[idx] *= f
    if site.how == "sdpa":
        _check_site(src, model, site, where, checked)


def _check_site(src: nn.Module, out: nn.Module, site, where: str, checked: bool) -> None:
    """Run the folded attention module and the parameterized one on the same random (B, T, C) input (a module
    that does not take one is left to the whole-model check on example=, `checked`)."""
    a = src.get_submodule(site.module) if site.module else src
    b = out.get_submodule(site.module) if site.module else out
    p = next(b.parameters())
    c = next((getattr(b, n) for n in A.EMBED_ATTRS if isinstance(getattr(b, n, None), int)), None)
    if c is None:
        w = next((t for t, _ in _query_rows(b, site) if t.dim() == 2), None)
        c = None if w is None else (w.shape[0] if type(getattr(b, "c_attn", None)).__name__ == "Conv1D" else w.shape[1])
    x = torch.randn(2, 5, c or 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(p)
    try:
        with _Eval(a, b):
            want, got = _outputs(a, x), _outputs(b, x)
    except Exception as e:  # its forward takes something else: fold cannot check the query slice it chose
        if checked:
            return
        raise ValueError(f"fold put the attention factor of {where} into its query projection but cannot check it: the "
                         f"module does not run on a (batch, time, {c}) input ({type(e).__name__}: {e}). Pass "
                         "fold(model, example=inputs) to check the whole model instead") from None
    if not (want and len(want) == len(got) and all(_close(g, w) for g, w in zip(got, want))):
        raise ValueError(f"fold put the attention factor of {where} into what it took for the query projection, and the "
                         "module's output changed: its fused projection does not hold the queries first. Multiply the "
                         "query weights by the factor yourself, or keep the model parameterized")
