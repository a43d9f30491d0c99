"""The fast path of `paramlab.engine.stack` for paramlab MLPs: K MLPs of one architecture as stacked
(K, ...) tensors, with each model's own multipliers (so the K models may differ in scheme).

The weights are stacked with `torch.func.stack_module_state` and the forward runs as one `baddbmm`
per layer, with each model's forward multipliers (read from the paramlab hooks on its layers, so the
ensemble computes exactly what the model computes) as (K, 1, 1) tensors. One backward of the summed
per-model losses gives every model its own gradient (the models share nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from ..models.mlp import MLP
from ..parameterize import InputScale, OutputAffine, get_plan

# Per-model weight size from which batched matmuls run as one GEMM per model (CPU GEMM libraries
# block one large matrix better than a batch of them; small ones are faster batched).
_MM_LOOP_NUMEL = 1 << 18


def _bmm(a: torch.Tensor, b: torch.Tensor, loop: bool) -> torch.Tensor:
    """a @ b batched over dim 0: one bmm, or one mm per model (into one output) when `loop`."""
    if not loop:
        return torch.bmm(a, b)
    out = torch.empty(a.shape[0], a.shape[1], b.shape[2], dtype=a.dtype, device=a.device)
    for i in range(a.shape[0]):
        torch.mm(a[i], b[i], out=out[i])
    return out


class _BatchedLinear(torch.autograd.Function):
    """y = h @ W^T + b per model, h (K, B, in), W (K, out, in), b (K, out) or None.

    The same GEMMs as nn.Linear's forward and backward (grad_W = gy^T h in W's own layout, so
    AccumulateGrad copies nothing), batched over the K models.
    """

    @staticmethod
    def forward(ctx, h, W, b):
        loop = W.is_cpu and W[0].numel() >= _MM_LOOP_NUMEL
        ctx.loop = loop
        ctx.save_for_backward(h, W)
        ctx.has_bias = b is not None
        if b is None:
            return _bmm(h, W.mT, loop)
        if loop:
            y = _bmm(h, W.mT, True)
            return y.add_(b.unsqueeze(1))
        return torch.baddbmm(b.unsqueeze(1), h, W.mT)

    @staticmethod
    def backward(ctx, gy):
        h, W = ctx.saved_tensors
        gh = _bmm(gy, W, ctx.loop) if ctx.needs_input_grad[0] else None
        gW = _bmm(gy.mT, h, ctx.loop) if ctx.needs_input_grad[1] else None
        gb = gy.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gh, gW, gb


# ----------------------------------------------------------------------------------------------
# stacked MLPs


@torch.no_grad()
def write_rows(models: Sequence[nn.Module], params: dict, which: Iterable[int] | None = None,
               rows: Sequence[int] | None = None) -> None:
    """Copy stack row rows[j] of `params` (name -> (K, ...)) into models[which[j]] (default: row i into model i)."""
    which = list(range(len(models))) if which is None else list(which)
    rows = list(range(len(which))) if rows is None else list(rows)
    for mi, r in zip(which, rows):
        for n, p in models[mi].named_parameters():
            p.copy_(params[n][r].to(p.device))


@dataclass
class _Layer:
    weight: str
    bias: str | None
    s_in: torch.Tensor | None  # InputScale factor, (K, 1, 1), None if 1 for every model
    s_out: torch.Tensor | None  # OutputAffine w_mult, (K, 1, 1)
    c_b: torch.Tensor | None  # OutputAffine (b_mult - w_mult), (K, 1, 1)


def _layer_coeffs(mod: nn.Linear) -> tuple[float, float, float]:
    """(input scale, output scale, extra bias coefficient) of the paramlab hooks on one Linear."""
    s_in, s_out, c_b = 1.0, 1.0, 0.0
    for h in mod._forward_pre_hooks.values():
        if not isinstance(h, InputScale):
            raise ValueError(f"the ensemble cannot replay a forward pre-hook of type {type(h).__name__}: "
                             "train models with extra hooks one by one (paramlab.train)")
        s_in *= h.scale
    for h in mod._forward_hooks.values():
        if not isinstance(h, OutputAffine):
            raise ValueError(f"the ensemble cannot replay a forward hook of type {type(h).__name__}: "
                             "train models with extra hooks one by one (paramlab.train)")
        if s_out != 1.0 or c_b != 0.0:
            raise ValueError("more than one OutputAffine hook on a layer")
        s_out = h.w_mult
        if mod.bias is not None and h.b_mult != h.w_mult:
            c_b = h.b_mult - h.w_mult
    return s_in, s_out, c_b


class MLPStack:
    """K paramlab MLPs of one architecture as stacked (K, ...) tensors.

    `params[name]` are leaf tensors (requires_grad) in `named_parameters` order; `forward(x)` takes
    x of shape (B, d_in) (one batch for all) or (K, B, d_in) and returns (K, B, d_out), each model
    with its own forward multipliers. `write_back()` copies the weights into the models.
    """

    def __init__(self, models: Sequence[nn.Module], device=None):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        for m in models:
            if not isinstance(m, MLP):
                raise TypeError(
                    f"MLPStack stacks paramlab MLPs (paramlab.mlp); got {type(m).__name__}. "
                    "Stack other paramlab models with paramlab.engine.stack.stack (the vmap path), or train "
                    "them one by one (paramlab.train, or train_many(mode='sequential'))"
                )
            get_plan(m)  # raises a clear error if not parameterized
            if any(mod._forward_hooks or mod._forward_pre_hooks for mod in (m, m.act, m.layers)):
                raise ValueError("the ensemble cannot replay forward hooks on the model or its activation: "
                                 "train models with extra hooks one by one (paramlab.train)")
        ref = models[0]
        shapes = [(n, tuple(p.shape), p.dtype) for n, p in ref.named_parameters()]
        for i, m in enumerate(models[1:], 1):
            if [(n, tuple(p.shape), p.dtype) for n, p in m.named_parameters()] != shapes:
                raise ValueError(f"model {i} has other parameter shapes or dtypes than model 0: an ensemble needs one architecture")
            if type(m.act) is not type(ref.act):
                raise ValueError(f"model {i} has activation {type(m.act).__name__}, model 0 {type(ref.act).__name__}")
        self.models = list(models)
        self.k = len(models)
        self.act = ref.act
        self.device = torch.device(device) if device is not None else next(ref.parameters()).device
        params, _ = torch.func.stack_module_state(self.models)
        self.names = [n for n, _, _ in shapes]
        self.params = {n: params[n].detach().to(self.device).contiguous().requires_grad_(True) for n in self.names}
        self.dtype = self.params[self.names[0]].dtype
        self.layers: list[_Layer] = []
        prefixes = [f"layers.{i}" for i in range(len(ref.layers))] + ["readout"]
        for pre in prefixes:
            coeffs = [_layer_coeffs(m.get_submodule(pre)) for m in self.models]
            col = lambda j, trivial: (None if all(c[j] == trivial for c in coeffs)  # noqa: E731
                                      else torch.tensor([c[j] for c in coeffs], dtype=self.dtype, device=self.device).view(-1, 1, 1))
            bias = f"{pre}.bias" if f"{pre}.bias" in self.params else None
            self.layers.append(_Layer(f"{pre}.weight", bias, col(0, 1.0), col(1, 1.0), col(2, 0.0)))

    def forward(self, x: torch.Tensor, params: dict | None = None, per_model: bool | None = None) -> torch.Tensor:
        """(K, B, d_out) from x (B, d_in) or (K, B, d_in) (the shape says which: `per_model` is not needed)."""
        p = self.params if params is None else params
        h = x
        last = len(self.layers) - 1
        autocast = torch.is_autocast_enabled(x.device.type)
        # In place only on the ensemble's own weights in full precision: under autocast y * s promotes
        # a bf16 y to float32, and callers passing `params` (torch.func) get plain out-of-place ops.
        inplace = params is None and not autocast
        relu = inplace and type(self.act) is nn.ReLU
        for i, L in enumerate(self.layers):
            W = p[L.weight]
            k, d_out, d_in = W.shape
            b = p[L.bias] if L.bias is not None else None
            # The input scale goes on the smaller side: s (h W^T) = (s h) W^T, so a wide-to-narrow
            # layer (the readout) scales its (K, B, d_out) product, not its (K, B, d_in) input.
            scale_out = L.s_in is not None and d_out < d_in
            if L.s_in is not None and not scale_out:
                h = h * L.s_in  # (B, d) * (K, 1, 1) -> (K, B, d)
            if h.dim() == 2:
                h = h.unsqueeze(0).expand(k, -1, -1)
            bb = None if scale_out else b  # a bias is not input-scaled: added after the scale
            if autocast:
                y = torch.bmm(h, W.mT) if bb is None else torch.baddbmm(bb.unsqueeze(1), h, W.mT)
            else:
                y = _BatchedLinear.apply(h, W, bb)
            # y is a fresh tensor that no backward saves (the product saves h and W; a multiplication
            # by a constant saves the constant), so the scales and the ReLU may work in place.
            if scale_out:
                if b is not None:
                    y = torch.addcmul(b.unsqueeze(1), y, L.s_in)
                else:
                    y = y.mul_(L.s_in) if inplace else y * L.s_in
            if L.s_out is not None:
                y = y.mul_(L.s_out) if inplace else y * L.s_out
            if L.c_b is not None:
                y = y.add_(L.c_b * p[L.bias].unsqueeze(1)) if inplace else y + L.c_b * p[L.bias].unsqueeze(1)
            if i < last:
                h = torch.relu_(y) if relu else self.act(y)
            else:
                h = y
        return h

    __call__ = forward

    def write_back(self, which: Iterable[int] | None = None, rows: Sequence[int] | None = None) -> None:
        """Copy the stacked weights into the models (row `rows[j]` into model `which[j]`)."""
        write_rows(self.models, self.params, which, rows)

    def keep(self, rows) -> None:
        """Keep only the models at `rows` of the stack (after some diverged)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.params = {n: t.detach()[rows].requires_grad_(True) for n, t in self.params.items()}
        for L in self.layers:
            for f in ("s_in", "s_out", "c_b"):
                v = getattr(L, f)
                if v is not None:
                    setattr(L, f, v[rows])
