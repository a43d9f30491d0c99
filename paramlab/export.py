"""Export: a parameterized model as a plain module, multipliers folded into its weights, no hooks.

`fold(model)` returns a copy that computes the same function with no paramlab machinery, so a
model trained under muP can be saved and used by code that knows nothing about paramlab (an HF
model with `save_pretrained`, loaded back by plain `transformers.AutoModel.from_pretrained`):

    forward multipliers      W <- m^-a * W per use (and b <- m^-a_b * b), hooks removed
    tied tensors             uses with different multipliers (a tied embedding and readout under muP:
                             1 and 1/m) cannot share one folded tensor: the further use gets its own copy,
                             scaled by its multiplier, and an HF config gets tie_word_embeddings=False
    attention scale          the factor scale / scale_model_own is folded into the query projection (HF:
                             Llama-family q_proj, GPT-2's c_attn query columns), and the module's own scale
                             is put back; q.k then carries the factor. Rotary embeddings are linear in q,
                             so this is exact for them too
    mup's MuReadout          replaced by an nn.Linear holding output_mult / width_mult() * W
    depth-rule branches      a branch module's output times m_L^-alpha (paramlab.depth): W <- m_L^-alpha W and
                             b <- m_L^-alpha b, exact for an affine module (Linear, ConvNd, HF Conv1D); any other
                             branch module is refused (its state_dict loaded into a plain model would silently
                             lose the multiplier)

What fold cannot bake into the weights is refused: an attention scale set on a module's
scaled_dot_product_attention call (paramlab does not know which projection makes its queries), a
query normalized after its projection (q_norm), and paramlab's own Transformer (its tied readout and
attention scale live on the model; build it with tied=False and use it as it is).
"""

from __future__ import annotations

import copy

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


def fold(model: nn.Module) -> nn.Module:
    """A copy of `model` (unwrapped from DDP / compile) with every paramlab multiplier and attention
    scale folded into its weights and no paramlab hooks or plan; same outputs (see the module docstring)."""
    plan = get_plan(model)
    out = copy.deepcopy(W.unwrap(model))
    for mname, mod in out.named_modules():
        if type(mod).__module__.startswith("paramlab.models"):
            raise ValueError(f"fold does not export paramlab's own {type(mod).__name__} ({mname!r}): its attention "
                             "scale and tied readout live on the model. Use it as it is (its state_dict loads into the "
                             "same builder)")
    _check_branches(out, plan)
    MU.remove(out)
    DP.remove(out)
    A.restore(out, plan.attention)
    AU.remove(out)
    RP.remove(out)
    del out.__dict__[PLAN_ATTR]
    with torch.no_grad():
        _untie(out, plan)
        _fold_multipliers(out, plan)
        _fold_branches(out, plan)
        for site in plan.attention:
            _fold_attention(out, site)
    return out


def _untie(model: nn.Module, plan) -> None:
    """Give each further use whose multiplier differs from its tensor's a tensor of its own."""
    own = {t.name: t.mult for t in plan.tensors}
    untied = False
    for u in plan.uses:
        if u.mult == own[u.tensor]:
            continue
        path, _, attr = f"{u.module}.{u.attr}".strip(".").rpartition(".")
        holder = model.get_submodule(path) if path else model
        old = getattr(holder, attr)
        setattr(holder, attr, nn.Parameter(old.detach().clone(), requires_grad=old.requires_grad))
        untied = True
    cfg = getattr(model, "config", None)
    if untied and cfg is not None and hasattr(cfg, "tie_word_embeddings"):
        cfg.tie_word_embeddings = False  # plain transformers must not tie the two back when loading


def _fold_multipliers(model: nn.Module, plan) -> None:
    modules = dict(model.named_modules())
    done = set()
    for mname, mults in MU.module_mults(plan).items():
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


def _fold_attention(model: nn.Module, site) -> None:
    if site.how in ("keep", "mha"):
        return
    mod = model.get_submodule(site.module) if site.module else model
    if site.how == "sdpa":
        if site.scale != site.d_head ** -0.5:
            raise ValueError(
                f"fold cannot move the attention scale of {site.module!r} ({type(mod).__name__}) into its weights: paramlab "
                "sets it on the module's scaled_dot_product_attention call and does not know which projection makes the "
                "queries. Multiply that projection by the factor yourself, or keep the model parameterized"
            )
        return
    f = site.scale / site.original
    if f == 1.0:
        return
    if getattr(mod, "q_norm", None) is not None:
        raise ValueError(f"{site.module!r} ({type(mod).__name__}) normalizes its queries after the projection (q_norm): "
                         "fold cannot put the attention factor into q_proj; keep the model parameterized")
    if isinstance(getattr(mod, "q_proj", None), nn.Linear):
        q = mod.q_proj
        q.weight.mul_(f)
        if q.bias is not None:
            q.bias.mul_(f)
    elif getattr(mod, "is_cross_attention", False) and hasattr(mod, "q_attn"):
        mod.q_attn.weight.mul_(f)
        mod.q_attn.bias.mul_(f)
    elif hasattr(mod, "c_attn") and hasattr(mod, "embed_dim"):  # GPT-2: Conv1D (in, 3 E), columns q | k | v
        e = mod.embed_dim
        mod.c_attn.weight[:, :e].mul_(f)
        mod.c_attn.bias[:e].mul_(f)
    else:
        raise ValueError(f"fold does not know the query projection of {site.module!r} ({type(mod).__name__}): keep the "
                         "model parameterized")
