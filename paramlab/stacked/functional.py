"""Stacked ensembles of ANY paramlab model: K copies of one architecture (differing in init, batch seed
and learning rate) trained as one vectorized pass with `torch.func`.

    params   = stack_module_state(models)            name -> (K, *shape) leaves (a tied tensor once)
    out[k]   = functional_call(base, params[k], x_k)  vmap over k; base = a deep copy of models[0]
    loss     = sum_k loss_k                           the models share no tensor: grad_k = d loss_k / d theta_k
    step     theta_k <- Adam/SGD(theta_k; lr_k * lr_mult[name], eps[name])   per-tensor rules of the plan

functional_call runs the module's own forward, so paramlab's multipliers (the `InputScale` /
`OutputAffine` forward hooks, a depth rule's `BranchScale`) and the Transformer's attention scale and tied-readout multiplier
(floats on modules) apply inside the vmapped call exactly as in a plain call. Those numbers are shared
by the K rows, so the K models must agree on them: `forward_constants` collects every plain number on
every module and hook, and a mix of schemes, widths or base widths is refused ("group the grid by
(scheme, width)"). A `Stacked` has the `models` / `names` / `params` of an `MLPEnsemble`, so the stacked
optimizer of `paramlab.stacked.optim` (per-model, per-tensor lr / wd / eps from `paramlab.param_groups`,
torch's fused Adam) steps it: stacked == one by one up to float rounding (tests/test_functional_stack.py,
float64, rtol 1e-10, with a 0.1% lr change as the negative control).

Speed (benchmarks/stacked_transformer.py): on CPU this generic path is not faster than one model after
another for a Transformer at d_model 64 (SDPA has no vmap batching rule and falls back to a loop), so
`lm_lr_transfer` stacks only where the benchmark measured a gain. The MLP-only `MLPEnsemble` is the fast
path for MLPs.
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

__all__ = ["Stacked", "forward_constants"]

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

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module], rows: Sequence[int]) -> None:
        """Copy stack row r into models[i] for each pair (i, r) of (models, rows)."""
        for m, r in zip(models, rows):
            for n, p in m.named_parameters():
                p.copy_(self.params[n][r])
