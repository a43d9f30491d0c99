"""Stacked ensembles of ANY paramlab model: K copies of one architecture (differing in init, batch seed
and learning rate) trained as one vectorized pass with `torch.func`.

    params   = stack_module_state(models)            name -> (K, *shape) leaves (a tied tensor once)
    out[k]   = functional_call(base, params[k], x_k)  vmap over k; base = a deep copy of models[0]
    loss     = sum_k loss_k                           the models share no tensor: grad_k = d loss_k / d theta_k
    step     theta_k <- Adam/SGD(theta_k; lr_k * lr_mult[name], eps[name])   per-tensor rules of the plan

functional_call runs the module's own forward, so paramlab's multipliers (the `InputScale` /
`OutputAffine` forward hooks) and the Transformer's attention scale and tied-readout multiplier
(floats on modules) apply inside the vmapped call exactly as in a plain call. Those numbers are shared
by the K rows, so the K models must agree on them: `forward_constants` collects every plain number on
every module and hook, and a mix of schemes, widths or base widths is refused ("group the grid by
(scheme, width)"). `StackedAdam` reads each tensor's lr multiplier and eps from `paramlab.param_groups`
of the models, as `paramlab.optimizer` does for a single model, and replays torch's single-tensor Adam
arithmetic with a (K, 1, ..., 1) lr, so stacked == one by one up to float rounding (tests/test_functional_stack.py,
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

from ..multipliers import HOOK_TYPES
from ..optim import param_groups
from ..parameterize import get_plan

__all__ = ["Stacked", "StackedAdam", "forward_constants"]

_SCALAR = (bool, int, float, str, type(None))


def forward_constants(model: nn.Module) -> dict:
    """Every plain number a forward may read: module attributes (attention scale, readout mult, ...) and
    the attributes of every forward (pre-)hook; name -> value. Equal dicts = the same forward function."""
    out = {}
    for mname, mod in model.named_modules():
        for k, v in vars(mod).items():
            if not k.startswith("_") and isinstance(v, _SCALAR):
                out[f"{mname}.{k}"] = v
        for kind, hooks in (("pre", mod._forward_pre_hooks), ("post", mod._forward_hooks)):
            for i, h in enumerate(hooks.values()):
                if not isinstance(h, HOOK_TYPES):
                    raise ValueError(
                        f"module {mname!r} has a forward hook {type(h).__name__} that paramlab did not install; "
                        "stacked training replays only paramlab's multipliers: remove it or train one by one")
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


class StackedAdam:
    """Adam (torch's single-tensor arithmetic, no weight decay) or SGD over a `Stacked`.

    Tensor n of model k steps with lr_k * lr_mult[n] and eps[n]; lr_mult and eps come from
    `paramlab.param_groups` of the models (the scheme's per-tensor rules), checked equal across models.
    Adam:  m <- lerp(m, g, 1 - b1);  v <- b2 v + (1 - b2) g^2;
           p <- p - lr_k lr_mult / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, stack: Stacked, lrs: Sequence[float], optimizer: str = "adam", betas=(0.9, 0.999),
                 eps: float = 1e-8):
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"StackedAdam runs 'adam' or 'sgd', got {optimizer!r}")
        if len(lrs) != stack.k:
            raise ValueError(f"{stack.k} stacked models need {stack.k} learning rates, got {len(lrs)}")
        self.fam = optimizer
        self.beta1, self.beta2 = betas
        tables = []
        for m in stack.models:  # name -> (lr multiplier, eps), as paramlab.optimizer computes them
            groups = param_groups(m, "adam", lr=1.0, eps=eps) if optimizer == "adam" else param_groups(m, "sgd", lr=1.0)
            tables.append({n: (g["lr_mult"], g.get("eps", eps)) for g in groups for n in g["names"]})
        if any(t != tables[0] for t in tables[1:]):
            raise ValueError("the stacked models have different per-tensor lr multipliers or eps: one scheme per stack")
        self.mult_eps = tables[0]
        self.lrs = [float(v) for v in lrs]
        self.state: dict[str, dict] = {n: {} for n in stack.names}
        self.step_count = 0

    def keep(self, rows: Sequence[int]) -> None:
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        self.lrs = [self.lrs[r] for r in rows]
        self.state = {n: {k: v[idx] for k, v in st.items()} for n, st in self.state.items()}

    def _lr(self, n: str, p: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """(K, 1, ..., 1): lr_k * lr_mult[n] * scale."""
        mult = self.mult_eps[n][0]
        shape = (len(self.lrs),) + (1,) * (p.dim() - 1)
        return torch.tensor([lr * mult * scale for lr in self.lrs], dtype=p.dtype, device=p.device).view(shape)

    @torch.no_grad()
    def step(self, stack: Stacked) -> None:
        self.step_count += 1
        t = self.step_count
        for n, p in stack.params.items():
            g = p.grad
            if g is None:
                continue
            if self.fam == "sgd":
                p.sub_(g * self._lr(n, p))
                continue
            st = self.state[n]
            if not st:
                st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
            st["m"].lerp_(g, 1 - self.beta1)
            st["v"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            bc1 = 1 - self.beta1 ** t
            bc2_sqrt = (1 - self.beta2 ** t) ** 0.5
            denom = (st["v"].sqrt() / bc2_sqrt).add_(self.mult_eps[n][1])
            p.sub_(st["m"] / denom * self._lr(n, p, 1.0 / bc1))  # torch: addcdiv_(m, denom, -lr / bc1)
