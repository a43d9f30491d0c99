"""Empirical neural tangent kernel with torch.func.

    Theta(x, x')_{kl} = sum_p  w_p * <d f_k(x) / d theta_p , d f_l(x') / d theta_p>

summed over the trained tensors ``theta_p`` of the model (its parameters that require grad), with
per-tensor weights ``w_p`` (all 1 by default). The derivatives are taken through the module's own
forward (``torch.func.functional_call``), so paramlab's forward multipliers (hooks) apply: for a
parameter with multiplier ``mult`` the kernel sees ``mult * dF/dW_eff``, exactly what SGD on that
tensor sees.

Weights
-------
* ``weights="lr"``: the LR-weighted kernel ``sum_p lr_mult_p J_p J_p^T`` from the model's plan
  (docs/theory.md §3.3's ``Theta_eta``: what enters ``f_{t+1} = f_t - lr * Theta_eta chi`` for SGD).
* ``weights="nt"`` or `nt_weights(model, W_std, b_std)`: neural-tangents' ``'ntk'`` convention. NT
  trains standardized parameters ``theta ~ N(0, 1)`` with ``W_eff = (W_std / sqrt(fan_in)) theta``;
  paramlab trains ``w`` with ``W_eff = mult * w``. Both describe the same ``W_eff``, so
  ``d f / d theta = (W_std / sqrt(fan_in)) / mult * d f / d w`` and the NT kernel is the paramlab
  kernel with ``w_l = (W_std_l^2 / fan_in_l) / mult_l^2`` (fan_in at the current width). When the
  model's effective init std is ``W_std / sqrt(fan_in)`` (paramlab's ``gain`` = W_std) this is
  ``w_l = init_std_l^2``, the variance of the trained tensor at init; for the ``ntk`` scheme it is
  width-independent (``gain^2 / fan_in_at_base``), so paramlab's plain eNTK differs from NT's by
  width-independent per-layer constants. Biases: ``b_std^2 / mult^2``, or 0 (left out) when
  ``b_std`` is None, matching NT's ``b_std=None``.
* a dict name -> weight (missing names: 1).

Modes (NT's conventions, ``nt.empirical_ntk_fn``): ``"full"`` (N1, N2, K, K); ``"trace"`` (N1, N2),
the average over the K outputs of the diagonal blocks (NT's ``trace_axes=(-1,)`` divides by K);
``"diagonal"`` (N1, N2, K), the diagonal in the outputs (NT's ``diagonal_axes=(-1,)``). With
``pairs=True`` only the aligned pairs Theta(x1[i], x2[i]) are computed: (N, K, K), (N,) or (N, K).
K is the number of outputs per example (the output flattened after the batch dim).

Methods: ``"jacobian"`` (per-example Jacobians with ``vmap(jacrev)``, contracted with matmuls),
``"ntvp"`` (NTK-vector products ``J(x1) (w * J(x2)^T v)`` with ``vjp`` then ``jvp``, vmapped over
the basis vectors; never materializes J(x1)) and ``"layerwise"`` (`paramlab.measure.ntk_layerwise`:
Linear and Conv blocks from forward hooks and K backward passes of the whole batch; the default
through ``"auto"``). `ntk_vp` gives Theta @ v for one v without forming
the kernel, for wide outputs or many points. Everything is chunked over inputs (``chunk_size``, or
automatic from ``max_memory`` bytes), so a few thousand points fit in memory. The batched paths
(``ntvp``, `ntk_vp`) assume the model treats examples independently (no batch norm in train mode).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .jacobian import chunks, jacobian_blocks, jacobian_pairs, tile
from .ntk_layerwise import layerwise_ntk, layerwise_problem

__all__ = ["empirical_ntk", "ntk_vp", "ntk_change", "nt_weights", "ntk_weights", "ntk_naive", "split_params", "MODES"]

MODES = ("full", "trace", "diagonal")


# -- parameters and weights -------------------------------------------------------------------------


def split_params(model: nn.Module, params: Mapping[str, torch.Tensor] | None):
    """(trained: name -> tensor, fixed: name -> tensor) for functional_call: the model's own tensors
    (params None) or those of `params`, split by whether the model trains them (requires_grad)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        fixed = {}
    else:
        params = dict(params)
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"params is missing trained tensors {missing[:5]}")
        trained = {n: torch.as_tensor(params[n]).detach() for n in names}
        fixed = {n: torch.as_tensor(v).detach() for n, v in params.items() if n not in trained}
    return trained, fixed


def nt_weights(model: nn.Module, W_std: float | Mapping[str, float] | None = None,
               b_std: float | None = None) -> dict[str, float]:
    """Per-tensor weights that turn paramlab's eNTK into neural-tangents' 'ntk'-convention eNTK.

    For weight tensors (>= 2-D): ``w = (W_std^2 / fan_in) / mult^2`` with fan_in the current fan-in
    (product of all dims but the first) and ``mult`` the plan's forward multiplier (1 without a plan).
    ``W_std`` (a number, or name -> number) defaults to each layer's own effective gain,
    ``mult * init_std * sqrt(fan_in)``, i.e. the W_std of the NT network with the same init.
    1-D tensors (biases): ``b_std^2 / mult^2``, or 0 when ``b_std`` is None (NT's no-bias).
    """
    from ..parameterize import PLAN_ATTR

    plan = getattr(model, PLAN_ATTR, None)
    out = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        t = plan[n] if plan is not None and n in plan else None
        mult = t.mult if t is not None else 1.0
        if p.dim() >= 2:
            fan_in = p[0].numel()
            if W_std is None:
                if t is None:
                    raise ValueError(f"{n}: no paramlab plan to read the init std from; pass W_std=")
                std = mult * t.init_std * math.sqrt(fan_in)
            else:
                std = W_std[n] if isinstance(W_std, Mapping) else float(W_std)
            out[n] = (std ** 2 / fan_in) / mult ** 2
        else:
            out[n] = 0.0 if b_std is None else float(b_std) ** 2 / mult ** 2
    return out


def ntk_weights(model: nn.Module, weights=None, optimizer: str = "sgd") -> dict[str, float] | None:
    """Resolve ``weights`` (None, 'lr', 'nt' or a dict) to name -> float (None: all ones)."""
    if weights is None:
        return None
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(weights, str):
        if weights == "lr":
            from ..parameterize import get_plan
            from ..schemes import optimizer_family

            plan = get_plan(model)
            fam = optimizer_family(optimizer)
            return {n: plan[n].lr_mult(fam) for n in names}
        if weights == "nt":
            return nt_weights(model)
        raise ValueError(f"unknown weights {weights!r}: use None, 'lr', 'nt' or a dict name -> weight")
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"weights names unknown tensors {sorted(unknown)[:5]}; trained tensors are {names[:8]}...")
        return {n: float(weights.get(n, 1.0)) for n in names}
    raise TypeError(f"weights must be None, 'lr', 'nt' or a dict, got {type(weights).__name__}")


# -- helpers ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_forward_ad():
    """torch's forward AD loads jit-scripted decompositions on first use, which warns that
    torch.jit.script is deprecated: a torch-internal, one-time warning with nothing to act on. An op
    without a forward-AD formula (e.g. CPU fused attention) gets a hint at the alternatives."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
        try:
            yield
        except NotImplementedError as e:
            if "forward AD" not in str(e):
                raise
            raise NotImplementedError(
                f"method='ntvp' and ntk_vp need forward-mode AD through every op of the model: "
                f"{str(e).splitlines()[0]} Use method='layerwise' or 'jacobian'; paramlab's Transformer computes "
                f"attention without the fused kernel after model.expose_attn_logits()") from e


def _check_mode(mode: str):
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")


def _out_dim(model, trained, fixed, x) -> int:
    with torch.no_grad():
        out = functional_call(model, {**fixed, **trained}, (x[:1],))
    return int(out[0].numel())


def _auto_chunk(chunk_size, n_params: int, k: int, itemsize: int, max_memory: int, live: int = 2) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    per = max(1, n_params * k * itemsize)
    return max(1, int(max_memory // (live * per)))


def _jacobian(model, trained, fixed, x):
    """name -> (C, K, numel) per-example Jacobians of the flattened outputs."""

    def f(p, xi):
        return functional_call(model, {**fixed, **p}, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))(trained, x)
    return {n: j.reshape(j.shape[0], j.shape[1], -1) for n, j in jac.items()}


def _ntvp_block(model, trained, fixed, xa, xb, w):
    """Full Theta(xa, xb) (Ca, Cb, K, K) from NTK-vector products over the basis of (Cb, K)."""

    def fa(p):
        return functional_call(model, {**fixed, **p}, (xa,)).reshape(xa.shape[0], -1)

    def fb(p):
        return functional_call(model, {**fixed, **p}, (xb,)).reshape(xb.shape[0], -1)

    out_b, vjp_fn = vjp(fb, trained)
    cb, k = out_b.shape

    def column(v):
        (g,) = vjp_fn(v)
        if w is not None:
            g = {n: g[n] * w[n] for n in g}
        return jvp(fa, (trained,), (g,))[1]  # (Ca, K)

    basis = torch.eye(cb * k, dtype=out_b.dtype, device=out_b.device).reshape(cb * k, cb, k)
    with _quiet_forward_ad():
        cols = vmap(column)(basis)  # (Cb*K, Ca, K): cols[(b, l)][a, k] = Theta(a, b)_{k l}
    return cols.reshape(cb, k, xa.shape[0], k).permute(2, 0, 3, 1)


def _reduce(full, mode, pairs):
    """Reduce a full block (Ca, Cb, K, K) (or pairs (C, K, K)) to the mode."""
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=-2, dim2=-1)
    return diag.mean(-1) if mode == "trace" else diag


# -- public -------------------------------------------------------------------------------------------


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    mode: str = "full",
    pairs: bool = False,
    weights=None,
    optimizer: str = "sgd",
    params: Mapping[str, torch.Tensor] | None = None,
    method: str = "auto",
    chunk_size: int | None = None,
    max_memory: int = 2 ** 29,
    progress: bool = False,
) -> torch.Tensor:
    """Empirical NTK of ``model`` between inputs ``x1`` (N1, ...) and ``x2`` (N2, ...; default x1).

    Args:
        mode: 'full' (N1, N2, K, K), 'trace' (N1, N2; mean over outputs) or 'diagonal' (N1, N2, K).
        pairs: only aligned pairs Theta(x1[i], x2[i]): (N, K, K), (N,) or (N, K).
        weights: None, 'lr' (plan LR multipliers for ``optimizer``), 'nt' (`nt_weights`) or a dict.
        params: evaluate at these tensors (name -> tensor, e.g. a checkpoint) instead of the model's.
        method: 'jacobian' (Jacobian contraction), 'ntvp' (NTK-vector products), 'layerwise'
            (`paramlab.measure.ntk_layerwise`: Linear and Conv1d/2d blocks from forward hooks and K
            backward passes, no full Jacobian; (delta . delta') * (a . a') for one-position layers;
            the other tensors by the Jacobian path; the fastest by far) or 'auto' (layerwise unless
            batch norm in training mode couples the examples, else jacobian). Layers used at
            several positions (convolutions, tokens) cost an (N K, P) x (P, N K) contraction in
            'layerwise' and 'jacobian' alike; with many outputs per example relative to those
            positions (per-token LM logits), 'ntvp' avoids it and is faster
            (benchmarks/ntk_vs_loop.py: 3.5x vs 2.1x the loop for a Transformer with 128 logits).
        chunk_size: inputs per chunk (default: from ``max_memory`` bytes for the Jacobians in flight).
        progress: tqdm bar over chunks.
    """
    _check_mode(mode)
    if method not in ("auto", "jacobian", "ntvp", "layerwise"):
        raise ValueError(f"unknown method {method!r}: use 'auto', 'jacobian', 'ntvp' or 'layerwise'")
    trained, fixed = split_params(model, params)
    w = ntk_weights(model, weights, optimizer)
    if w is not None:  # tensors with weight 0 do not contribute: skip their derivatives
        trained_all = trained
        trained = {n: t for n, t in trained_all.items() if w[n] != 0.0}
        fixed = {**fixed, **{n: t for n, t in trained_all.items() if w[n] == 0.0}}
        if not trained:
            raise ValueError("every tensor has weight 0: the kernel is zero")
    same = x2 is None
    if method == "auto":
        method = "layerwise" if layerwise_problem(model) is None else "jacobian"
    if method == "layerwise":
        if pairs and not same and x1.shape[0] != x2.shape[0]:
            raise ValueError(f"pairs=True needs as many points in x1 as in x2, got {x1.shape[0]} and {x2.shape[0]}")
        out, rest = layerwise_ntk(model, trained, fixed, x1, x2, w, mode, pairs, max_memory)
        if rest:  # the tensors the hooks do not cover: the generic path, the others weighted 0
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            w_rest = {n: (1.0 if w is None else w[n]) if n in rest else 0.0 for n in names}
            generic = empirical_ntk(model, x1, x2, mode=mode, pairs=pairs, weights=w_rest, params={**fixed, **trained},
                                    method="jacobian", chunk_size=chunk_size, max_memory=max_memory, progress=progress)
            out = generic if out is None else out + generic
        return out
    x2 = x1 if same else x2
    if pairs and x1.shape[0] != x2.shape[0]:
        raise ValueError(f"pairs=True needs as many points in x1 as in x2, got {x1.shape[0]} and {x2.shape[0]}")
    k = _out_dim(model, trained, fixed, x1)
    n_params = sum(t.numel() for t in trained.values())
    itemsize = next(iter(trained.values())).element_size()
    # jacobian: two chunks of per-example Jacobians in flight; ntvp: Cb * K parameter-sized tangents
    c = _auto_chunk(chunk_size, n_params, k, itemsize, max_memory, live=2)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="eNTK blocks")

    n1, n2 = x1.shape[0], x2.shape[0]
    if method == "jacobian":
        jac_a = lambda i0, i1: _jacobian(model, trained, fixed, x1[i0:i1])  # noqa: E731
        jac_b = lambda j0, j1: _jacobian(model, trained, fixed, x2[j0:j1])  # noqa: E731
        if pairs:
            out = jacobian_pairs(jac_a, jac_b, n1, c, same, w, mode, bar)
        else:  # keep all x2 Jacobians when they fit in the budget
            cache_b = n2 * n_params * k * itemsize <= max_memory
            out = tile(jacobian_blocks(jac_a, jac_b, w, mode, same, cache_b), n1, n2, c, same, mode, bar)
    elif pairs:
        outs = []
        for i0, i1 in chunks(n1, c):
            rows = [_ntvp_block(model, trained, fixed, x1[i:i + 1], x2[i:i + 1], w)[0, 0] for i in range(i0, i1)]
            outs.append(_reduce(torch.stack(rows), mode, True))
            if bar is not None:
                bar.update(1)
        out = torch.cat(outs)
    else:
        out = tile(lambda ri, cj: _reduce(_ntvp_block(model, trained, fixed, x1[slice(*ri)], x2[slice(*cj)], w),
                                           mode, False), n1, n2, c, same, mode, bar)
    if bar is not None:
        bar.close()
    return out


def ntk_vp(
    model: nn.Module,
    x1: torch.Tensor,
    v: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    weights=None,
    optimizer: str = "sgd",
    params: Mapping[str, torch.Tensor] | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """NTK-vector product ``sum_{b,l} Theta(x1_a, x2_b)_{kl} v_{bl}`` without forming the kernel.

    ``v`` has the shape of the model's output on x2 (N2, ...) (or (N2, K)); returns (N1, K). One
    vjp over x2 (in chunks, accumulated in parameter space), the weights, then one jvp over x1.
    """
    trained, fixed = split_params(model, params)
    w = ntk_weights(model, weights, optimizer)
    x2 = x1 if x2 is None else x2
    v = v.reshape(x2.shape[0], -1)
    c2 = chunk_size or x2.shape[0]
    g = None
    for j0, j1 in chunks(x2.shape[0], c2):
        _, vjp_fn = vjp(lambda p: functional_call(model, {**fixed, **p}, (x2[j0:j1],)).reshape(j1 - j0, -1), trained)
        (gj,) = vjp_fn(v[j0:j1].to(next(iter(trained.values())).dtype))
        g = gj if g is None else {n: g[n] + gj[n] for n in g}
    if w is not None:
        g = {n: g[n] * w[n] for n in g}
    c1 = chunk_size or x1.shape[0]
    outs = []
    for i0, i1 in chunks(x1.shape[0], c1):
        with _quiet_forward_ad():
            _, jv = jvp(lambda p: functional_call(model, {**fixed, **p}, (x1[i0:i1],)).reshape(i1 - i0, -1),
                        (trained,), (g,))
        outs.append(jv)
    return torch.cat(outs)


def _as_params(x) -> dict[str, torch.Tensor]:
    if isinstance(x, nn.Module):
        return {n: p.detach() for n, p in x.named_parameters()}
    return dict(x)


def ntk_change(a, b, x: torch.Tensor, *, model: nn.Module | None = None, mode: str = "trace", weights=None,
               optimizer: str = "sgd", **kwargs) -> float:
    """Relative change ``||Theta_b - Theta_a||_F / ||Theta_a||_F`` of the eNTK on ``x`` between two checkpoints.

    ``a`` and ``b`` are each a model or a dict name -> tensor (e.g. a state dict); ``model`` is the
    architecture used for both (default: the first of a, b that is an nn.Module).
    """
    if model is None:
        model = a if isinstance(a, nn.Module) else b if isinstance(b, nn.Module) else None
        if model is None:
            raise ValueError("ntk_change needs a model: pass one of a, b as an nn.Module, or model=")
    ka = empirical_ntk(model, x, mode=mode, weights=weights, optimizer=optimizer, params=_as_params(a), **kwargs)
    kb = empirical_ntk(model, x, mode=mode, weights=weights, optimizer=optimizer, params=_as_params(b), **kwargs)
    return float((kb - ka).double().norm() / ka.double().norm())


def ntk_naive(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *, weights=None,
              optimizer: str = "sgd") -> torch.Tensor:
    """Reference eNTK (N1, N2, K, K) by a per-example, per-output autograd loop (slow; for tests and
    benchmarks)."""
    w = ntk_weights(model, weights, optimizer)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scale = torch.cat([torch.full((p.numel(),), 1.0 if w is None else w[n], dtype=p.dtype, device=p.device)
                       for n, p in named])

    def grads(x):
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1]).reshape(-1)
            for kk in range(out.shape[0]):
                gs = torch.autograd.grad(out[kk], [p for _, p in named], retain_graph=kk + 1 < out.shape[0],
                                         allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, (_, p) in zip(gs, named)]))
        return torch.stack(rows).reshape(x.shape[0], -1, scale.shape[0])

    g1 = grads(x1)
    g2 = g1 if x2 is None else grads(x2)
    full = torch.einsum("akp,blp->abkl", g1 * scale, g2)
    return full
