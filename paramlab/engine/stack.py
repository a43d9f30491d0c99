"""The one stacking interface: K models of one architecture as (K, ...) leaf tensors with a forward that
returns (K, B, ...), and the one rule that decides when stacking pays.

`stack(models)` returns the fastest stack that computes exactly what the models compute: paramlab MLPs
get `MLPStack` (`paramlab.engine.mlp_stack`: one batched matmul per layer, each model's own
multipliers, so schemes may mix); any other paramlab model gets `Stacked`, the generic vmap path below.
`Single` is the K = 1 case over the model's own parameters (plain training). Every stack has `models`,
`names`, `params` (name -> (K, ...) leaf), `forward(x, per_model)`, `keep(rows)` and
`write_back(which, rows)`; the engine's loop and `StackedUpdate` use only these.

The generic path trains K copies of any paramlab model (differing in init, batch seed and learning
rate) as one vectorized pass with `torch.func`:

    params   = stack_module_state(models)            name -> (K, *shape) leaves (a tied tensor once)
    out[k]   = functional_call(base, params[k], x_k)  vmap over k; base = a deep copy of models[0]
    loss     = sum_k loss_k                           the models share no tensor: grad_k = d loss_k / d theta_k
    step     theta_k <- Adam/SGD(theta_k; lr_k * lr_mult[name], eps[name])   per-tensor rules of the plan

functional_call runs the module's own forward, so paramlab's multipliers (the `InputScale` /
`OutputAffine` forward hooks, a depth rule's `BranchScale`) and the Transformer's attention scale and tied-readout multiplier
(floats on modules) apply inside the vmapped call exactly as in a plain call. Those numbers are shared
by the K rows, so the K models must agree on them: `forward_constants` collects every plain number on
every module and hook, and a mix of schemes, widths or base widths is refused ("group the grid by
(scheme, width)"). `paramlab.engine.update.StackedUpdate` (per-model, per-tensor lr / wd / eps from
`paramlab.param_groups`, torch's fused Adam) steps it: stacked == one by one up to float rounding
(tests/test_functional_stack.py, float64, rtol 1e-10, with a 0.1% lr change as the negative control).

When stacking pays (`stacking_pays`): a small model leaves a CPU core (or a GPU) waiting on Python and
kernel launches; stacking K models amortizes that overhead, while at large sizes the matmuls dominate and
stacking gains nothing (and holds K models in memory). The rule compares one model's training FLOPs per
step, 6 x (rows of the batch) x (weights of its matrices), with a threshold per (path, device) measured
by the benchmarks (`STACK_MAX_FLOPS`). On CPU both paths turn at ~1e8 FLOPs per model step:
benchmarks/ensemble_vs_sequential.py (K = 8, Adam, batch 128, depth-2 MLP on 32-dim inputs, 1 thread):
3.4-4.3x at width 64 (6e6), 1.15-1.9x at width 256 (5.7e7), 0.9-0.95x at width 512 (2.1e8) and 1024
(8.3e8); benchmarks/stacked_transformer.py (K = 8, batch 16 x 32 tokens, 1 thread): 1.23-1.25x at
d_model 32 (9.1e7), 0.95-0.97x at d_model 64 (3.3e8; SDPA has no vmap batching rule and loops over K).
On a GPU the MLP path stacks up to 5e10; the vmap path has not been measured there and does not stack.
"""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .. import audit
from ..depth import BranchScale
from ..multipliers import HOOK_TYPES
from ..parameterize import get_plan
from .mlp_stack import MLPStack, write_rows

_SCALAR = (bool, int, float, str, type(None))
# the hooks a stacked forward replays: each is a pure function of its module's output and its own plain numbers
# (collected below), so the vmapped call applies it per model exactly as a plain call does
REPLAYED = (*HOOK_TYPES, BranchScale)


def forward_constants(model: nn.Module) -> dict:
    """Every plain number a forward may read: module attributes (attention scale, readout mult, ...) and
    the attributes of every forward (pre-)hook; name -> value. Equal dicts = the same forward function."""
    if audit.pending(model):
        raise ValueError("paramlab's first-forward check of this parameterized model has not run yet: call each "
                         "model once (model(x)) before stacking, so the check runs and removes its hooks")
    out = {}
    for mname, mod in model.named_modules():
        for k, v in vars(mod).items():
            if not k.startswith("_") and isinstance(v, _SCALAR):
                out[f"{mname}.{k}"] = v
        for kind, hooks in (("pre", mod._forward_pre_hooks), ("post", mod._forward_hooks)):
            for i, h in enumerate(hooks.values()):
                if not isinstance(h, REPLAYED):
                    raise ValueError(
                        f"module {mname!r} has a forward hook {type(h).__name__} that stacked training does not "
                        "replay (it replays paramlab's width multipliers and depth-rule branch multipliers only): "
                        "remove the hook or train one by one")
                for k, v in vars(h).items():
                    if isinstance(v, _SCALAR):
                        out[f"{mname}.<{kind}hook{i}:{type(h).__name__}>.{k}"] = v
    return out


class Stacked:
    """K paramlab models of one architecture as stacked (K, ...) leaf tensors with a vmapped forward.

    forward(x, per_model=False): x (B, ...) is one batch for all K models; per_model=True: x (K, B, ...)
    gives model k its own batch x[k]. Returns (K, B, ...).
    """

    def __init__(self, models: Sequence[nn.Module]):
        models = list(models)
        if not models:
            raise ValueError("a stack needs at least one model")
        ref = models[0]
        get_plan(ref)  # a clear error if it is not a paramlab model
        sig = [(n, tuple(p.shape), p.dtype, p.device) for n, p in ref.named_parameters()]
        consts = forward_constants(ref)
        for i, m in enumerate(models[1:], 1):
            if type(m) is not type(ref) or [(n, tuple(p.shape), p.dtype, p.device)
                                            for n, p in m.named_parameters()] != sig:
                raise ValueError(f"model {i} has other parameters (names, shapes, dtypes or devices) than model 0: "
                                 "stack only models of one architecture and width")
            other = forward_constants(m)
            diff = sorted(k for k in set(consts) | set(other) if consts.get(k) != other.get(k))
            if diff:
                raise ValueError(
                    f"model {i} computes a different forward than model 0 ({diff[:3]} differ): the stack shares one "
                    "forward, so its models must have the same scheme, width and base width. Group the grid by "
                    "(scheme, width) and stack each group")
        if any(True for _ in ref.buffers()):
            raise ValueError("models with buffers (e.g. BatchNorm running stats) cannot be stacked: vmap cannot "
                             "update a buffer per model. Train them one by one")
        self.models = models
        self.names = [n for n, _ in ref.named_parameters()]
        params, _ = stack_module_state(models)  # name -> (K, ...) leaves with requires_grad
        self.params = {n: params[n] for n in self.names}
        # functional_call needs a module to run: a deep copy of model 0 keeps its hooks, float attributes
        # and weight ties (not moved to meta: Module.to() re-creates Parameters and unties a tied readout).
        self.base = copy.deepcopy(ref)
        self.base.requires_grad_(False)

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def _call(self, params, x):
        return functional_call(self.base, params, (x,))

    def forward(self, x: torch.Tensor, per_model: bool = False) -> torch.Tensor:
        with warnings.catch_warnings():  # SDPA has no vmap batching rule: torch loops over K (known, measured)
            warnings.filterwarnings("ignore", message=".*batching rule.*scaled_dot_product", category=UserWarning)
            return vmap(self._call, in_dims=(0, 0 if per_model else None))(self.params, x)

    __call__ = forward

    def keep(self, rows: Sequence[int]) -> None:
        """Drop every row not in `rows` (diverged models): new leaf tensors of the kept rows."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        self.params = {n: p.detach()[idx].requires_grad_(True) for n, p in self.params.items()}

    def write_back(self, which: Sequence[int] | None = None, rows: Sequence[int] | None = None) -> None:
        """Copy stack row rows[j] into model which[j] (default: every row into its model)."""
        write_rows(self.models, self.params, which, rows)


class Single:
    """One model as a stack of K = 1 over its own parameters (plain training: nothing is copied).

    forward(x) is `forward(x)` of the model (or of the `forward` callable given, e.g. under autocast):
    the output has no model dimension; the loop's loss adds it."""

    def __init__(self, model: nn.Module, forward=None):
        self.models = [model]
        self.forward = model if forward is None else forward
        self.names = [n for n, _ in model.named_parameters()]
        self.params = dict(model.named_parameters())

    def __call__(self, x, per_model: bool = False):
        return self.forward(x)

    def keep(self, rows: Sequence[int]) -> None:
        """Nothing to rebuild: keeping no row ends training."""

    def write_back(self, which=None, rows=None) -> None:
        """The model trains its own parameters: nothing to copy."""


def stack(models: Sequence[nn.Module], device=None):
    """The stack for `models`: `MLPStack` (batched matmuls) for paramlab MLPs, else the vmap `Stacked`."""
    from ..models.mlp import MLP

    models = list(models)
    if models and all(isinstance(m, MLP) for m in models):
        return MLPStack(models, device=device)
    if device is not None:
        for m in models:
            m.to(device)
    return Stacked(models)


# ----------------------------------------------------------------------------------------------
# when stacking pays

# One model's training FLOPs per step up to which stacking K >= 2 pays, per (path, device type): measured
# by benchmarks/ensemble_vs_sequential.py (path "mlp") and benchmarks/stacked_transformer.py ("vmap"), see
# the module docstring. A missing entry: not measured, do not stack.
STACK_MAX_FLOPS = {("mlp", "cpu"): 1e8, ("mlp", "cuda"): 5e10, ("vmap", "cpu"): 1e8}


def model_step_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Training FLOPs of one step of `model` on batch `x`: 6 x rows x (weights of its >= 2-d tensors).

    Rows: x.shape[0] for a float input (B, d_in); every token, x.numel(), for integer token ids (B, T).
    For an MLP this is 6 * batch * (d_in w + (L - 1) w^2 + w d_out)."""
    rows = x.numel() if not x.dtype.is_floating_point else x.shape[0]
    return 6.0 * rows * sum(p.numel() for p in model.parameters() if p.dim() >= 2)


def stacking_pays(model: nn.Module, x: torch.Tensor, k: int, device=None) -> bool:
    """The one rule: stack K >= 2 copies of `model` when one model's step on `x` is small enough to be
    overhead-bound (`STACK_MAX_FLOPS` for the path `stack` would take on `device`)."""
    from ..models.mlp import MLP

    if k < 2:
        return False
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    limit = STACK_MAX_FLOPS.get(("mlp" if isinstance(model, MLP) else "vmap", dev.type))
    return limit is not None and model_step_flops(model, x) <= limit
