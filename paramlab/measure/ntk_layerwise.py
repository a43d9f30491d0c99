"""Layerwise empirical NTK: each layer's block from forward hooks and K backward passes, no full Jacobian.

For a layer that applies a weight W to inputs, z_t = W a_t + b at positions t (the tokens of a
sequence, the patches of a convolution, a single position for an MLP), in a network whose examples
do not interact, the derivative of output k of example x is

    dF_k(x)/dW = sum_t delta_kt(x) a_t(x)^T,      dF_k(x)/db = beta * sum_t delta_kt(x),

with delta_kt = dF_k / dz_t (the gradient at the layer's raw output) and beta = 1, or b_mult / w_mult
when paramlab's `OutputAffine` hook rescales the output (out -> w_mult * out + (b_mult - w_mult) * b).
So the layer's kernel block never needs a per-example Jacobian of the whole network:

* one position (Linear on (N, n_in) inputs, the MLP case): Theta_W(x, x')_{kl} =
  (a(x) . a(x')) * (delta_k(x) . delta_l(x')), N^2 (n_in + K^2 n_out) flops per layer ("gram" form);
* several positions (Conv1d / Conv2d via unfold, Linear on (N, T, d) sequences): the per-example
  gradient G = sum_t delta_t a_t^T (N, K, n_out * n_in) is formed from the hooks with one einsum
  and contracted, layer by layer and in chunks of examples ("per-example" form). Like BackPACK's
  and Opacus's per-sample gradients: the network is run forward once and backward K times for the
  whole batch, instead of vmap over examples.

The inputs a_t are what the layer sees (after paramlab's `InputScale` pre-hook) and delta is taken at
the layer's own output, before any forward hook, so the kernel is w.r.t. the trained tensors.

Every other trained tensor (embeddings, norm gains, free-standing Parameters, tensors shared by
several modules, convolutions with groups or non-zero padding modes) goes to the generic Jacobian
path (`empirical_ntk(method='jacobian')`, restricted to those tensors). As a guard against weights
that are also used outside their layer (e.g. `x @ self.fc.weight` somewhere in forward), the hooked
per-example gradients, summed over examples and outputs, are compared with autograd's gradient of
the summed outputs; a tensor that disagrees also goes to the generic path.

Sources: the NTK as a sum of per-layer blocks and the (delta . delta')(a . a') form of a dense
layer's block, as exploited by Novak et al. (2022), "Fast Finite Width Neural Tangent Kernel"
(structured derivatives); per-example gradients from hooks follow Goodfellow (2015), "Efficient
per-example gradient computations", and Dangel et al. (2020), BackPACK.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .jacobian import gram_triangle, jacobian_blocks, jacobian_pairs, tile

_CONV = (nn.Conv1d, nn.Conv2d)


def layerwise_problem(model: nn.Module) -> str | None:
    """Why the layerwise method cannot handle ``model`` at all (None if it can)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        return "batch norm in training mode makes examples interact"
    return None


def _bias_scale(module: nn.Module) -> float | None:
    """beta: d(out)/d(bias) relative to d(out)/d(raw output) under paramlab's OutputAffine (None: unknown)."""
    from ..parameterize import OutputAffine

    scale = 1.0
    for h in module._forward_hooks.values():
        if isinstance(h, OutputAffine):
            if h.w_mult == 0.0:
                return None
            scale *= h.b_mult / h.w_mult
    return scale


def _hookable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, _CONV):
        return module.groups == 1 and module.padding_mode == "zeros"
    return False


@dataclass
class _Layer:
    """A hooked layer: its trained tensors and, per forward call, (input, raw output)."""

    name: str
    module: nn.Module
    weight: str | None  # the full name of the trained weight, if trained
    bias: str | None
    beta: float
    calls: list = field(default_factory=list)
    a: torch.Tensor | None = None  # (N, T, n_in)
    delta: torch.Tensor | None = None  # (N, K, T, n_out)


def _unfold(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Conv input (N, C_in, *spatial) -> patches (N, P, C_in * prod(kernel)) in the weight's layout."""
    two_d = isinstance(module, nn.Conv2d)
    if not two_d:
        x = x.unsqueeze(2)  # (N, C, L) -> (N, C, 1, L)
    ks = module.kernel_size if two_d else (1,) + tuple(module.kernel_size)
    dil = module.dilation if two_d else (1,) + tuple(module.dilation)
    st = module.stride if two_d else (1,) + tuple(module.stride)
    if module.padding == "same":
        pads = []
        for k, d in zip(reversed(ks), reversed(dil)):  # F.pad order: last dim first; torch puts the odd pixel right
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        pad = (0, 0)
    elif module.padding == "valid":
        pad = (0, 0)
    else:
        pad = tuple(module.padding) if two_d else (0,) + tuple(module.padding)
    cols = F.unfold(x, ks, dilation=dil, padding=pad, stride=st)  # (N, C_in * prod(ks), P)
    return cols.transpose(1, 2)


def _factors(layer: _Layer, n: int, deltas: list[list[torch.Tensor]]) -> None:
    """Fill layer.a (N, T, n_in) and layer.delta (N, K, T, n_out) from its calls (concatenated on T)."""
    a_parts, d_parts = [], []
    for (inp, _), ds in zip(layer.calls, deltas):
        d = torch.stack(ds, 1)  # (N, K, *out)
        if isinstance(layer.module, _CONV):
            a_parts.append(_unfold(layer.module, inp.detach()))
            d_parts.append(d.flatten(3).transpose(2, 3))  # (N, K, C_out, P) -> (N, K, P, C_out)
        else:
            a_parts.append(inp.detach().reshape(n, -1, inp.shape[-1]))
            d_parts.append(d.reshape(n, d.shape[1], -1, d.shape[-1]))
    # one call (the usual case): keep the views; the per-example einsum reads a conv delta in its
    # (N, K, C_out, P) storage order, which a concatenated copy would transpose (two copies of the batch)
    layer.a = a_parts[0] if len(a_parts) == 1 else torch.cat(a_parts, 1)
    layer.delta = d_parts[0] if len(d_parts) == 1 else torch.cat(d_parts, 2)
    layer.calls = []


def _per_example(layer: _Layer, sl: slice) -> dict[str, torch.Tensor]:
    """name -> per-example gradients (C, K, numel) of the layer's trained tensors, examples `sl`."""
    a, d = layer.a[sl], layer.delta[sl]
    out = {}
    if layer.weight is not None:
        out[layer.weight] = torch.einsum("nkto,nti->nkoi", d, a).flatten(2)
    if layer.bias is not None:
        out[layer.bias] = d.sum(2) * layer.beta
    return out


def _summed_grads(layer: _Layer) -> dict[str, torch.Tensor]:
    """Hooked gradient of sum_{n,k} F_k(x_n) per trained tensor (flattened), for the autograd check."""
    d = layer.delta.sum(1)  # (N, T, n_out)
    out = {}
    if layer.weight is not None:
        out[layer.weight] = torch.einsum("nto,nti->oi", d, layer.a).reshape(-1)
    if layer.bias is not None:
        out[layer.bias] = d.sum((0, 1)).reshape(-1) * layer.beta
    return out


def _capture(model, trained, fixed, x):
    """Hook, run forward once and backward K + 1 times. Returns (layers, names failing the autograd check)."""
    owners: dict[int, list[str]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append(f"{mname}.{pname}" if mname else pname)
    layers: dict[str, _Layer] = {}
    for mname, mod in model.named_modules():
        if not _hookable(mod):
            continue
        prefix = f"{mname}." if mname else ""
        names = {k: prefix + k for k, p in mod._parameters.items()
                 if p is not None and prefix + k in trained and len(owners[id(p)]) == 1}
        beta = _bias_scale(mod)
        if "bias" in names and beta is None:
            names.pop("bias")
        if names:
            layers[mname] = _Layer(mname, mod, names.get("weight"), names.get("bias"), beta or 1.0)
    if not layers:
        return {}, set()

    def hook(layer):
        def fn(module, args, out):
            layer.calls.append((args[0] if args else None, out))  # called with input= as a keyword: no input seen
        return fn

    handles = [lay.module.register_forward_hook(hook(lay), prepend=True) for lay in layers.values()]
    n = x.shape[0]
    try:
        with torch.enable_grad():
            params = {**fixed, **{k: t.detach().requires_grad_(True) for k, t in trained.items()}}
            out = functional_call(model, params, (x,)).reshape(n, -1)  # (N, K)
    finally:
        for h in handles:
            h.remove()
    for lay in list(layers.values()):  # a call whose output does not depend on the trained tensors
        if not lay.calls or any(a is None or not z.requires_grad for a, z in lay.calls):
            del layers[lay.name]
    zs = [z for lay in layers.values() for _, z in lay.calls]
    k_out = out.shape[1]
    grads = [[] for _ in zs]
    for k in range(k_out):
        gs = torch.autograd.grad(out[:, k].sum(), zs, retain_graph=True, allow_unused=True)
        for lst, g, z in zip(grads, gs, zs):
            lst.append(torch.zeros_like(z) if g is None else g.detach())
    i = 0
    for lay in layers.values():
        c = len(lay.calls)
        _factors(lay, n, grads[i:i + c])
        i += c
    # guard: hooked gradients of sum_{n,k} F_k(x_n) must equal autograd's (a weight used outside its
    # layer too would differ); one more backward pass
    hooked = [nm for lay in layers.values() for nm in (lay.weight, lay.bias) if nm is not None]
    auto = torch.autograd.grad(out.sum(), [params[nm] for nm in hooked], allow_unused=True)
    auto = {nm: (torch.zeros_like(params[nm]) if g is None else g).reshape(-1) for nm, g in zip(hooked, auto)}
    eps = torch.finfo(out.dtype).eps
    failed = set()
    for lay in layers.values():
        d = lay.delta.sum(1)  # (N, T, n_out)
        bound = {lay.weight: float(d.norm() * lay.a.norm()), lay.bias: float(d.norm()) * math.sqrt(d.shape[1]) * abs(lay.beta)}
        for nm, g in _summed_grads(lay).items():
            ref = auto[nm]
            tol = 1e3 * eps * float(ref.norm() + g.norm()) + 1e2 * eps * bound[nm]
            if float((g - ref).norm()) > tol:
                failed.add(nm)
    return layers, failed


def _gram_block(l1: _Layer, l2: _Layer, w, mode: str, pairs: bool):
    """One-position layer: (a . a') * (delta . delta') [+ beta^2 delta . delta' for the bias]."""
    a1, a2 = l1.a[:, 0], l2.a[:, 0]  # (N, n_in)
    d1, d2 = l1.delta[:, :, 0], l2.delta[:, :, 0]  # (N, K, n_out)
    if pairs:
        dd = {"full": "akd,ald->akl", "trace": "akd,akd->a", "diagonal": "akd,akd->ak"}[mode]
        aa = (a1 * a2).sum(-1)  # (N,)
        shape = (-1,) + (1,) * (2 if mode == "full" else 0 if mode == "trace" else 1)
    else:
        dd = {"full": "ikd,jld->ijkl", "trace": "ikd,jkd->ij", "diagonal": "ikd,jkd->ijk"}[mode]
        aa = a1 @ a2.T  # (N1, N2)
        shape = aa.shape + ((1, 1) if mode == "full" else () if mode == "trace" else (1,))
    dk = torch.einsum(dd, d1, d2)
    if mode == "trace":
        dk = dk / d1.shape[1]
    term = 0.0
    if l1.weight is not None:
        term = term + (1.0 if w is None else w[l1.weight]) * dk * aa.reshape(shape)
    if l1.bias is not None:
        term = term + (1.0 if w is None else w[l1.bias]) * l1.beta ** 2 * dk
    return term


def layerwise_ntk(model, trained, fixed, x1, x2, w, mode: str, pairs: bool, max_memory: int = 2 ** 29):
    """(kernel over the hooked tensors or None, names of the trained tensors left for the generic path).

    trained / fixed: name -> tensor as in `empirical_ntk`; w: name -> weight or None; mode, pairs as
    there. The caller adds the generic (Jacobian) kernel of the returned names.
    """
    problem = layerwise_problem(model)
    if problem:
        raise ValueError(f"method='layerwise' needs a network whose examples do not interact ({problem}): "
                         f"use method='jacobian'")
    same = x2 is None
    la, failed = _capture(model, trained, fixed, x1)
    lb, failed_b = (la, set()) if same else _capture(model, trained, fixed, x2)
    failed |= failed_b

    out = None
    covered = set()
    several = []  # layers with several positions: per-example gradients, tiled like the Jacobian path
    for name, l1 in la.items():
        l2 = lb.get(name)
        if l2 is None:
            continue
        for lay in (l1, l2):  # a tensor failing the guard goes generic; the layer's other tensor stays
            lay.weight = None if lay.weight in failed else lay.weight
            lay.bias = None if lay.bias in failed else lay.bias
        names = [nm for nm in (l1.weight, l1.bias) if nm is not None]
        if not names:
            continue
        covered.update(names)
        if l1.a.shape[1] == 1 and l2.a.shape[1] == 1:
            blk = _gram_block(l1, l2, w, mode, pairs)
            out = blk if out is None else out + blk
        else:
            several.append((l1, l2))
    if several:
        n1, n2, k = x1.shape[0], (x1 if same else x2).shape[0], several[0][0].delta.shape[1]
        numel = sum(trained[nm].numel() for l1, _ in several for nm in (l1.weight, l1.bias) if nm is not None)
        per = k * numel * next(iter(trained.values())).element_size()  # bytes of one example's gradients
        c = max(1, int(max_memory // (2 * per)))
        if same and not pairs:  # several chunks, so that the mirrored half of the contraction is skipped
            c = min(c, max(1, math.ceil(n1 / 4)))
        jac_a = lambda i0, i1: {nm: g for l1, _ in several for nm, g in _per_example(l1, slice(i0, i1)).items()}  # noqa: E731
        jac_b = lambda j0, j1: {nm: g for _, l2 in several for nm, g in _per_example(l2, slice(j0, j1)).items()}  # noqa: E731
        if pairs:
            blk = jacobian_pairs(jac_a, jac_b, n1, c, same, w, mode)
        elif same and mode == "full" and n1 * per <= max_memory:
            # every example's gradients fit at once: the kernel's upper block triangle as a few large GEMMs
            blk = gram_triangle(jac_a(0, n1), w)
        else:
            blk = tile(jacobian_blocks(jac_a, jac_b, w, mode, same, n2 * per <= max_memory), n1, n2, c, same, mode)
        out = blk if out is None else out + blk
    return out, [nm for nm in trained if nm not in covered]
