"""Train K MLPs of one width in one pass: stacked weights, batched matmuls, per-model hyperparameters.

The K models may differ in init seed, batch seed, learning rate, weight decay, Adam eps and scheme
(also base width and `output_mult`): everything that changes numbers but not shapes. Their weights
are stacked with `torch.func.stack_module_state` into (K, ...) tensors and the forward runs as one
`baddbmm` per layer, with each model's forward multipliers (read from the paramlab hooks on its
layers, so the ensemble computes exactly what the model computes) as (K, 1, 1) tensors. One backward
of the summed per-model losses gives every model its own gradient (the models share nothing). The
optimizer is SGD (momentum, nesterov, weight decay) / Adam / AdamW written over stacked tensors with
the per-tensor lr, weight decay and eps that `paramlab.optim.param_groups` gives each model, in the
same arithmetic order as torch's single-tensor SGD and Adam.

Batches follow `paramlab.train.train` exactly: model k draws its minibatches from a generator seeded
with its own `seed`, so `train_ensemble(models, task, lr=lrs, seed=seeds)` equals
`[train(m, task, lr=l, seed=s) for m, l, s in zip(models, lrs, seeds)]` up to float rounding (the
tests check 1e-5 relative in float32, SGD with momentum and Adam). Histories, divergence records
(a model that diverges drops out of the stack; the others go on), hooks and `log` callbacks behave
as in `train`, per model.

When it pays: a small model leaves a CPU core (or a GPU) mostly waiting on Python and kernel-launch
overhead; stacking K models amortizes it. At large widths the matmuls dominate and stacking gains
nothing (and holds K models in memory at once). `use_ensemble` decides from the per-model FLOPs of a
step, with a threshold measured by `benchmarks/ensemble_vs_sequential.py`; `train_many` applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models.mlp import MLP
from .optim import param_groups
from .parameterize import InputScale, OutputAffine, get_plan
from .schemes import optimizer_family
from .train import Hook, TrainResult, train

__all__ = [
    "MLPEnsemble",
    "ENSEMBLE_MAX_FLOPS_CPU",
    "step_flops",
    "train_ensemble",
    "train_many",
    "train_sequential",
    "use_ensemble",
]

# Per-model training FLOPs of one step (6 * batch * weights) up to which stacking pays on CPU.
# Measured by benchmarks/ensemble_vs_sequential.py (K = 8, Adam, batch 128, depth-2 MLP on 32-dim
# inputs, 1 thread, 2-core machine shared with other jobs): 3.4x at width 64 (6e6 FLOPs per model
# step), 1.15x at width 256 (5.7e7), 0.95x at width 512 (2.1e8) and 1024 (8.3e8). With 2 threads:
# 4.2x, 1.8x, -, 0.9x.
ENSEMBLE_MAX_FLOPS_CPU = 1e8
# On a GPU a small model uses a sliver of the device: stack up to this many FLOPs per model and step.
ENSEMBLE_MAX_FLOPS_CUDA = 5e10
# Per-model tensor size from which the optimizer updates model by model (a (K, ...) stack of large
# tensors falls out of cache between Adam's passes; one model's slice does not).
_LOOP_NUMEL = 1 << 18
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


def _as_list(value, k: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise ValueError(f"{name} has {len(value)} entries for {k} models")
        return list(value)
    return [value] * k


def _autocast_dtype(autocast) -> torch.dtype | None:
    if autocast in (None, False, "none", "fp32", "float32"):
        return None
    if autocast in ("bf16", "bfloat16", torch.bfloat16, True):
        return torch.bfloat16
    if autocast in ("fp16", "float16", torch.float16):
        return torch.float16
    raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")


# ----------------------------------------------------------------------------------------------
# stacked MLPs


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
                             "train models with extra hooks with paramlab.train.train")
        s_in *= h.scale
    for h in mod._forward_hooks.values():
        if not isinstance(h, OutputAffine):
            raise ValueError(f"the ensemble cannot replay a forward hook of type {type(h).__name__}: "
                             "train models with extra hooks with paramlab.train.train")
        if s_out != 1.0 or c_b != 0.0:
            raise ValueError("more than one OutputAffine hook on a layer")
        s_out = h.w_mult
        if mod.bias is not None and h.b_mult != h.w_mult:
            c_b = h.b_mult - h.w_mult
    return s_in, s_out, c_b


class MLPEnsemble:
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
                    f"train_ensemble stacks paramlab MLPs (paramlab.mlp); got {type(m).__name__}. "
                    "Train other models with paramlab.train.train (or train_many(mode='sequential'))"
                )
            get_plan(m)  # raises a clear error if not parameterized
            if any(mod._forward_hooks or mod._forward_pre_hooks for mod in (m, m.act, m.layers)):
                raise ValueError("the ensemble cannot replay forward hooks on the model or its activation: "
                                 "train models with extra hooks with paramlab.train.train")
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

    def forward(self, x: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        p = self.params if params is None else params
        h = x
        last = len(self.layers) - 1
        for i, L in enumerate(self.layers):
            W = p[L.weight]
            k = W.shape[0]
            if L.s_in is not None:
                h = h * L.s_in  # (B, d) * (K, 1, 1) -> (K, B, d)
            if h.dim() == 2:
                h = h.unsqueeze(0).expand(k, -1, -1)
            b = p[L.bias] if L.bias is not None else None
            if torch.is_autocast_enabled(h.device.type):
                y = torch.bmm(h, W.mT) if b is None else torch.baddbmm(b.unsqueeze(1), h, W.mT)
            else:
                y = _BatchedLinear.apply(h, W, b)
            if L.s_out is not None:
                y = y * L.s_out
            if L.c_b is not None:
                y = y + L.c_b * p[L.bias].unsqueeze(1)
            h = self.act(y) if i < last else y
        return h

    __call__ = forward

    @torch.no_grad()
    def write_back(self, which: Iterable[int] | None = None, rows: Sequence[int] | None = None) -> None:
        """Copy the stacked weights into the models (row `rows[j]` into model `which[j]`)."""
        which = list(range(self.k)) if which is None else list(which)
        rows = list(range(len(which))) if rows is None else list(rows)
        for mi, r in zip(which, rows):
            for n, p in self.models[mi].named_parameters():
                p.copy_(self.params[n][r].to(p.device))

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the models at `rows` of the stack (after some diverged)."""
        self.params = {n: t.detach()[rows].requires_grad_(True) for n, t in self.params.items()}
        for L in self.layers:
            for f in ("s_in", "s_out", "c_b"):
                v = getattr(L, f)
                if v is not None:
                    setattr(L, f, v[rows])


# ----------------------------------------------------------------------------------------------
# losses and evaluation, per model


def _batched_loss(name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int | None) -> torch.Tensor:
    """Per-model loss (K,) of out (K, B, C) against y (B, ...) or (K, B, ...), as `train.loss_fn`."""
    if name == "xent":
        if y.dtype != torch.int64:
            raise ValueError("xent needs integer class labels (a classification task)")
        k, b, c = out.shape
        yy = y.expand(k, b) if y.dim() == 1 else y
        return F.cross_entropy(out.reshape(k * b, c), yy.reshape(k * b), reduction="none").view(k, b).mean(-1)
    if name == "mse":
        if y.dtype == torch.int64:
            y = F.one_hot(y, n_classes or out.shape[-1]).to(out.dtype)
        return 0.5 * (out - y.to(out.dtype)).pow(2).sum(-1).mean(-1)
    raise ValueError(f"unknown loss {name!r}: known are mse, xent")


@torch.no_grad()
def _evaluate(ens: MLPEnsemble, x, y, loss, n_classes, ac_dtype, batch: int = 4096) -> list[dict]:
    with _autocast(ens.device, ac_dtype):
        outs = torch.cat([ens(x[i:i + batch]) for i in range(0, len(x), batch)], dim=1)
    losses = _batched_loss(loss, outs, y, n_classes).tolist()
    res = [{"loss": float(v)} for v in losses]
    if y.dtype == torch.int64:
        accs = (outs.argmax(-1) == y).float().mean(-1).tolist()
        for r, a in zip(res, accs):
            r["acc"] = float(a)
    return res


def _autocast(device: torch.device, dtype):
    if dtype is None:
        import contextlib

        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# the optimizer over stacked tensors


class _StackedOptimizer:
    """SGD / Adam / AdamW over (K, ...) tensors with per-model, per-tensor lr, weight decay and eps."""

    def __init__(self, ens: MLPEnsemble, name: str, lrs, wds, epss, eps_mode, momentum, nesterov, betas):
        self.name = name.lower()
        self.fam = optimizer_family(self.name)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.step_count = 0
        # per tensor name: lists over models of the torch param group's lr / weight_decay / eps
        hp = {n: {"lr": [], "wd": [], "eps": []} for n in ens.names}
        for m, lr, wd, eps in zip(ens.models, lrs, wds, epss):
            groups = param_groups(m, self.fam, lr, wd, eps=eps if self.fam == "adam" else None, eps_mode=eps_mode)
            for g in groups:
                for n in g["names"]:
                    hp[n]["lr"].append(g["lr"])
                    hp[n]["wd"].append(g["weight_decay"])
                    hp[n]["eps"].append(g.get("eps", eps))
        self.hp = hp
        self.state: dict[str, dict[str, torch.Tensor]] = {n: {} for n in ens.names}
        self._tensors(ens)

    def _tensors(self, ens: MLPEnsemble, rows: list[int] | None = None) -> None:
        """(Re)build the (K, 1, ...) hyperparameter tensors for the models at `rows`."""
        rows = list(range(len(next(iter(self.hp.values()))["lr"]))) if rows is None else rows
        self.rows = rows
        self.t = {}
        for n in ens.names:
            p = ens.params[n]
            shape = (-1,) + (1,) * (p.dim() - 1)
            h = {key: [self.hp[n][key][r] for r in rows] for key in ("lr", "wd", "eps")}
            t = lambda v: torch.tensor(v, dtype=p.dtype, device=p.device).view(shape)  # noqa: E731
            d = {"neg_lr": t([-v for v in h["lr"]]), "lr_py": h["lr"], "eps_py": h["eps"], "wd_py": h["wd"]}
            if any(h["wd"]):
                d["wd"] = t(h["wd"])
                d["decay"] = t([1 - lr * wd for lr, wd in zip(h["lr"], h["wd"])])
            if self.fam == "adam":
                d["eps"] = t(h["eps"])
            self.t[n] = d

    def keep(self, ens: MLPEnsemble, keep_idx: torch.Tensor) -> None:
        idx = keep_idx.tolist()
        for n in self.state:
            self.state[n] = {k: v[keep_idx] for k, v in self.state[n].items()}
        self._tensors(ens, [self.rows[i] for i in idx])

    @torch.no_grad()
    def step(self, ens: MLPEnsemble) -> None:
        self.step_count += 1
        for n in ens.names:
            p = ens.params[n]
            if p[0].numel() >= _LOOP_NUMEL:
                self._step_loop(n, p)
            else:
                self._step_stacked(n, p)

    def _step_stacked(self, n: str, p: torch.Tensor) -> None:
        """One update of all K models at once: few kernels, for tensors small enough to stay in cache."""
        step = self.step_count
        grad = p.grad
        t, st = self.t[n], self.state[n]
        if self.fam == "sgd":
            if "wd" in t:
                grad = grad + p * t["wd"]
            if self.momentum != 0:
                if "buf" not in st:
                    st["buf"] = grad.clone()
                else:
                    st["buf"].mul_(self.momentum).add_(grad)
                grad = grad + st["buf"] * self.momentum if self.nesterov else st["buf"]
            p.add_(grad * t["neg_lr"])
            return
        # Adam / AdamW as torch's _single_tensor_adam
        if "wd" in t:
            if self.name == "adamw":
                p.mul_(t["decay"])
            else:
                grad = grad + p * t["wd"]
        if "m" not in st:
            st["m"] = torch.zeros_like(p)
            st["v"] = torch.zeros_like(p)
        st["m"].lerp_(grad, 1 - self.beta1)
        st["v"].mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bc1 = 1 - self.beta1 ** step
        bc2_sqrt = (1 - self.beta2 ** step) ** 0.5
        ss = torch.tensor([-(lr / bc1) for lr in t["lr_py"]], dtype=p.dtype, device=p.device).view(t["neg_lr"].shape)
        denom = (st["v"].sqrt() / bc2_sqrt).add_(t["eps"])
        p.add_(st["m"] / denom * ss)

    def _step_loop(self, n: str, p: torch.Tensor) -> None:
        """Model by model on views of the stack, with torch's own single-tensor SGD / Adam ops: for
        large tensors, where one model's slice stays in cache across the optimizer's passes."""
        step = self.step_count
        t, st = self.t[n], self.state[n]
        if self.fam == "sgd":
            if self.momentum != 0 and "buf" not in st:
                st["buf"] = torch.empty_like(p)
            for r, (lr, wd) in enumerate(zip(t["lr_py"], t["wd_py"])):
                pr, g = p[r], p.grad[r]
                if wd != 0:
                    g = g.add(pr, alpha=wd)
                if self.momentum != 0:
                    buf = st["buf"][r]
                    if step == 1:
                        buf.copy_(g)
                    else:
                        buf.mul_(self.momentum).add_(g)
                    g = g.add(buf, alpha=self.momentum) if self.nesterov else buf
                pr.add_(g, alpha=-lr)
            return
        if "m" not in st:
            st["m"] = torch.zeros_like(p)
            st["v"] = torch.zeros_like(p)
        bc1 = 1 - self.beta1 ** step
        bc2_sqrt = (1 - self.beta2 ** step) ** 0.5
        for r, (lr, wd, eps) in enumerate(zip(t["lr_py"], t["wd_py"], t["eps_py"])):
            pr, g, m, v = p[r], p.grad[r], st["m"][r], st["v"][r]
            if wd != 0:
                if self.name == "adamw":
                    pr.mul_(1 - lr * wd)
                else:
                    g = g.add(pr, alpha=wd)
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (v.sqrt() / bc2_sqrt).add_(eps)
            pr.addcdiv_(m, denom, value=-(lr / bc1))


# ----------------------------------------------------------------------------------------------
# training


def train_ensemble(
    models: Sequence[nn.Module],
    task,
    *,
    optimizer: str = "sgd",
    lr: float | Sequence[float] = 0.1,
    seed: int | Sequence[int] = 0,
    steps: int = 100,
    batch_size: int | None = None,
    loss: str | None = None,
    eval_every: int | None = None,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float | Sequence[float] = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float | Sequence[float] = 1e-8,
    eps_mode: str = "gradient",
    hooks: Iterable[Hook] = (),
    log: Sequence[Callable[[dict, int], None] | None] | None = None,
    progress: bool | str = False,
    device=None,
    autocast: str | torch.dtype | None = None,
) -> list[TrainResult]:
    """Train K paramlab MLPs of one architecture together; returns one `TrainResult` per model.

    Equivalent to `paramlab.train.train(models[k], task, optimizer=optimizer, lr=lr[k], seed=seed[k],
    ...)` for each k (same batches, same optimizer, same history records and divergence handling),
    but in one pass over stacked weights. `lr`, `seed`, `weight_decay` and `eps` may be one value or
    one per model; models may have different schemes / base widths (same shapes). The trained
    weights are written back into `models` at the end (and before `hooks` run at eval points).

    device: where to train (default: the models' device); the models get their weights back there.
    autocast: 'bf16' (or 'fp16' on CUDA) runs forward passes under torch.autocast; weights,
        optimizer state and losses stay in the models' dtype.
    log: one `log(metrics, step)` callable (or None) per model.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    models = list(models)
    k = len(models)
    lrs = [float(v) for v in _as_list(lr, k, "lr")]
    seeds = [int(v) for v in _as_list(seed, k, "seed")]
    wds = [float(v) for v in _as_list(weight_decay, k, "weight_decay")]
    epss = [float(v) for v in _as_list(eps, k, "eps")]
    logs = list(log) if log is not None else [None] * k
    if len(logs) != k:
        raise ValueError(f"log has {len(logs)} entries for {k} models")
    hooks = list(hooks)
    ac_dtype = _autocast_dtype(autocast)
    loss = loss or ("xent" if task.kind == "classification" else "mse")
    if device is not None:
        for m in models:
            m.to(device)
    ens = MLPEnsemble(models, device=device)
    opt = _StackedOptimizer(ens, optimizer, lrs, wds, epss, eps_mode, momentum, nesterov, betas)
    dev, dtype = ens.device, ens.dtype
    xtr, ytr = task.x_train.to(device=dev, dtype=dtype), task.y_train.to(dev)
    xte, yte = task.x_test.to(device=dev, dtype=dtype), task.y_test.to(dev)
    if ytr.dtype.is_floating_point:
        ytr, yte = ytr.to(dtype), yte.to(dtype)
    n = len(xtr)
    bs = n if batch_size is None else min(int(batch_size), n)
    eval_every = max(1, eval_every or max(1, steps // 10))
    results = [TrainResult() for _ in range(k)]
    alive = list(range(k))  # model index of each row of the stack

    # one generator per distinct seed: models sharing a seed share their batches
    uniq = sorted(set(seeds))
    gens = {s: torch.Generator().manual_seed(s) for s in uniq}
    row_seed_slot = [uniq.index(seeds[i]) for i in alive]

    def record(step: int) -> list[int]:
        """Evaluate every live model, run hooks, log; returns the rows whose train loss is not finite."""
        tr = _evaluate(ens, xtr, ytr, loss, task.n_classes, ac_dtype)
        te = _evaluate(ens, xte, yte, loss, task.n_classes, ac_dtype)
        if hooks:
            ens.write_back(alive)
        bad = []
        for r, mi in enumerate(alive):
            rec = {"step": step}
            rec.update({f"train/{kk}": v for kk, v in tr[r].items()})
            rec.update({f"test/{kk}": v for kk, v in te[r].items()})
            if hooks:
                models[mi].train()
                with torch.no_grad():
                    for h in hooks:
                        rec.update(h(step, models[mi]) or {})
            results[mi].history.append(rec)
            if logs[mi] is not None:
                logs[mi]({kk: v for kk, v in rec.items() if kk != "step"}, step)
            if not math.isfinite(rec["train/loss"]):
                bad.append(r)
        return bad

    def drop(rows_bad: list[int]) -> None:
        nonlocal alive, row_seed_slot
        ens.write_back([alive[r] for r in rows_bad], rows_bad)
        keep = [r for r in range(len(alive)) if r not in rows_bad]
        idx = torch.tensor(keep, dtype=torch.long)
        ens.keep(idx.to(dev))
        opt.keep(ens, idx.to(dev))
        alive = [alive[r] for r in keep]
        row_seed_slot = [row_seed_slot[r] for r in keep]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else f"ensemble x{k}", leave=False)

    for m in models:
        m.train()
    if k:
        record(0)  # as in train(): a non-finite loss at step 0 is found by the first step
    perms = None
    if bs != n:
        perms = [torch.randperm(n, generator=gens[s]) for s in uniq]
    pos = 0
    for step in range(1, steps + 1):
        if not alive:
            break
        if bs == n:
            xb, yb = xtr, ytr
        else:
            if pos + bs > n:
                perms = [torch.randperm(n, generator=gens[s]) for s in uniq]
                pos = 0
            slots = sorted(set(row_seed_slot))
            if len(slots) == 1:
                idx = perms[slots[0]][pos:pos + bs].to(dev)
                xb, yb = xtr[idx], ytr[idx]
            else:
                idx = torch.stack([perms[s][pos:pos + bs] for s in row_seed_slot]).to(dev)  # (K, bs)
                xb, yb = xtr[idx], ytr[idx]
            pos += bs
        for p in ens.params.values():
            p.grad = None
        with _autocast(dev, ac_dtype):
            out = ens(xb)
        values = _batched_loss(loss, out.to(dtype) if ac_dtype is not None else out, yb, task.n_classes)
        lvs = values.detach().tolist()
        bad = [r for r, v in enumerate(lvs) if not math.isfinite(v)]
        if bad:
            for r in bad:
                mi = alive[r]
                results[mi].diverged = True
                results[mi].history.append({"step": step, "train/loss": float("nan"), "diverged": 1})
                if logs[mi] is not None:
                    logs[mi]({"train/loss": float("nan"), "diverged": 1}, step)
            del out, values
            if bs != n and xb.dim() == 3:
                keep = [r for r in range(len(alive)) if r not in bad]
                xb, yb = xb[keep], yb[keep]
            drop(bad)
            if not alive:
                break
            with _autocast(dev, ac_dtype):
                out = ens(xb)
            values = _batched_loss(loss, out.to(dtype) if ac_dtype is not None else out, yb, task.n_classes)
        values.sum().backward()
        opt.step(ens)
        for mi in alive:
            results[mi].steps_done = step
        if bar is not None:
            bar.update(1)
        if step % eval_every == 0 or step == steps:
            bad = record(step)
            if bad:
                for r in bad:
                    mi = alive[r]
                    results[mi].diverged = True
                    results[mi].history[-1]["diverged"] = 1
                drop(bad)
    if bar is not None:
        bar.close()
    if alive:
        ens.write_back(alive)
    return results


def train_sequential(models: Sequence[nn.Module], task, *, lr=0.1, seed=0, weight_decay=0.0, eps=1e-8,
                     log=None, **kwargs) -> list[TrainResult]:
    """The reference: `paramlab.train.train` on each model in turn (same arguments as `train_ensemble`)."""
    models = list(models)
    k = len(models)
    lrs, seeds = _as_list(lr, k, "lr"), _as_list(seed, k, "seed")
    wds, epss = _as_list(weight_decay, k, "weight_decay"), _as_list(eps, k, "eps")
    logs = list(log) if log is not None else [None] * k
    if len(logs) != k:
        raise ValueError(f"log has {len(logs)} entries for {k} models")
    return [train_one(m, task, lr=lr_k, seed=s, weight_decay=wd, eps=e, log=lg, **kwargs)
            for m, lr_k, s, wd, e, lg in zip(models, lrs, seeds, wds, epss, logs)]


class _Autocast(nn.Module):
    """Runs the wrapped model's forward under torch.autocast (same parameters, same hooks)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = model
        self.ac_dtype = dtype

    def forward(self, x):
        dev = next(self.inner.parameters()).device
        with torch.autocast(device_type=dev.type, dtype=self.ac_dtype):
            out = self.inner(x)
        dtype = next(self.inner.parameters()).dtype
        return out.to(dtype) if out.dtype != dtype else out


def train_one(model: nn.Module, task, *, optimizer: str = "sgd", lr: float = 0.1, autocast=None, device=None,
              **kwargs) -> TrainResult:
    """`paramlab.train.train` with `device=` (model and task moved there) and `autocast='bf16'`.

    Builds the optimizer from the model's plan itself, so the autocast wrapper never hides the plan.
    """
    from .optim import optimizer as make_optimizer

    if device is not None:
        model.to(device)
        task = task.to(device)
    dev = next(model.parameters()).device
    if task.x_train.device != dev:
        task = task.to(dev)
    ac_dtype = _autocast_dtype(autocast)
    if ac_dtype is None:
        return train(model, task, optimizer=optimizer, lr=lr, **kwargs)
    opt_keys = ("momentum", "nesterov", "weight_decay", "betas", "eps", "eps_mode")
    opt_kw = {kk: kwargs.pop(kk) for kk in opt_keys if kk in kwargs}
    opt = make_optimizer(model, optimizer, lr=lr, **opt_kw)
    return train(_Autocast(model, ac_dtype), task, optimizer=opt, lr=lr, **kwargs)


# ----------------------------------------------------------------------------------------------
# when to stack


def step_flops(width: int, depth: int, d_in: int, d_out: int, batch: int) -> float:
    """Training FLOPs of one step of one MLP: 6 * batch * (number of matmul weights)."""
    weights = d_in * width + (depth - 1) * width * width + width * d_out
    return 6.0 * batch * weights


def use_ensemble(width: int, depth: int, d_in: int, d_out: int, batch: int, k: int, device="cpu") -> bool:
    """The `auto` policy: stack K >= 2 models when one model's step is small enough to be
    overhead-bound (thresholds measured by benchmarks/ensemble_vs_sequential.py)."""
    if k < 2:
        return False
    limit = ENSEMBLE_MAX_FLOPS_CUDA if torch.device(device).type == "cuda" else ENSEMBLE_MAX_FLOPS_CPU
    return step_flops(width, depth, d_in, d_out, batch) <= limit


def train_many(models: Sequence[nn.Module], task, *, mode: str = "auto", batch_size: int | None = None,
               device=None, **kwargs) -> list[TrainResult]:
    """Train K models: stacked (`mode='ensemble'`), one after another (`'sequential'`), or whichever
    `use_ensemble` picks (`'auto'`). Arguments as `train_ensemble`."""
    if mode not in ("auto", "ensemble", "sequential"):
        raise ValueError(f"mode must be 'auto', 'ensemble' or 'sequential', got {mode!r}")
    models = list(models)
    if mode == "auto":
        ok = all(isinstance(m, MLP) for m in models)
        if ok:
            m0 = models[0]
            width = m0.layers[0].out_features
            bs = len(task.x_train) if batch_size is None else min(int(batch_size), len(task.x_train))
            dev = device or next(m0.parameters()).device
            ok = use_ensemble(width, m0.depth, m0.layers[0].in_features, m0.readout.out_features, bs, len(models), dev)
        mode = "ensemble" if ok else "sequential"
    if mode == "ensemble":
        return train_ensemble(models, task, batch_size=batch_size, device=device, **kwargs)
    return train_sequential(models, task, batch_size=batch_size, device=device, **kwargs)
