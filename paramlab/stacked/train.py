"""Train K MLPs of one width in one pass: stacked weights, batched matmuls, per-model hyperparameters.

The K models may differ in init seed, batch seed, learning rate, weight decay, Adam eps and scheme
(also base width and `output_mult`): everything that changes numbers but not shapes. Their weights
are stacked with `torch.func.stack_module_state` into (K, ...) tensors and the forward runs as one
`baddbmm` per layer, with each model's forward multipliers (read from the paramlab hooks on its
layers, so the ensemble computes exactly what the model computes) as (K, 1, 1) tensors. One backward
of the summed per-model losses gives every model its own gradient (the models share nothing). The
optimizer is SGD (momentum, nesterov, weight decay) / Adam / AdamW over the stacked tensors with the
per-tensor lr, weight decay and eps that `paramlab.optim.param_groups` gives each model (Adam through
torch's fused kernel on slices of the stacks, see `paramlab.stacked.optim`).

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

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .. import live
from ..divergence import DIVERGE_FACTOR, check_factor, diverged_reason
from ..losses import default_loss, stacked_loss_fn
from ..models.mlp import MLP
from ..precision import autocast_context, autocast_dtype
from ..train import Hook, TrainResult, train
from ..train_checks import check_data, check_output, check_sizes
from .model import MLPEnsemble
from .optim import StackedOptimizer

__all__ = ["ENSEMBLE_MAX_FLOPS_CPU", "ENSEMBLE_MAX_FLOPS_CUDA", "step_flops", "train_ensemble", "train_many",
           "train_sequential", "use_ensemble"]

# Per-model training FLOPs of one step (6 * batch * weights) up to which stacking pays on CPU.
# Measured by benchmarks/ensemble_vs_sequential.py (K = 8, Adam, batch 128, depth-2 MLP on 32-dim
# inputs, 1 thread, 2-core machine shared with other jobs): 3.4x at width 64 (6e6 FLOPs per model
# step), 1.15x at width 256 (5.7e7), 0.95x at width 512 (2.1e8) and 1024 (8.3e8). With 2 threads:
# 4.2x, 1.8x, -, 0.9x. With the fused Adam (issue #15; CPU time, machine under load): 4.3x at 64,
# 1.9x at 256, 0.9x at 1024, so the threshold stands.
ENSEMBLE_MAX_FLOPS_CPU = 1e8
# On a GPU a small model uses a sliver of the device: stack up to this many FLOPs per model and step.
ENSEMBLE_MAX_FLOPS_CUDA = 5e10


def _as_list(value, k: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise ValueError(f"{name} has {len(value)} entries for {k} models")
        return list(value)
    return [value] * k


# Evaluation chunk: rows per chunk such that one (K, rows, width) activation holds about this many
# elements. A (8, 2048, 256) float32 activation is 16 MB, far outside the cache, and each fresh
# allocation that large page-faults; 1 MB chunks (128 rows at K = 8, width 256: a training batch's
# size, so the allocator reuses the training step's blocks) run several times faster on CPU.
_EVAL_ELEMENTS = 1 << 18


@torch.no_grad()
def _evaluate(ens: MLPEnsemble, x, y, loss, n_classes, ac_dtype) -> list[dict]:
    width = max(ens.params[L.weight].shape[1] for L in ens.layers)
    batch = max(1, _EVAL_ELEMENTS // (ens.params[ens.names[0]].shape[0] * width))
    with autocast_context(ens.device, ac_dtype):
        chunks = [ens(x[i:i + batch]) for i in range(0, len(x), batch)]
    outs = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
    losses = stacked_loss_fn(loss, outs, y, n_classes).tolist()
    res = [{"loss": float(v)} for v in losses]
    if y.dtype == torch.int64:
        accs = (outs.argmax(-1) == y).float().mean(-1).tolist()
        for r, a in zip(res, accs):
            r["acc"] = float(a)
    return res


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
    diverge_factor: float | None = DIVERGE_FACTOR,
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
    diverge_factor: as in `train` (`paramlab.divergence`).
    """
    check_sizes(steps, batch_size, eval_every)
    check_factor(diverge_factor)
    check_data(task)
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
    ac_dtype = autocast_dtype(autocast)
    loss = loss or default_loss(task)
    if device is not None:
        for m in models:
            m.to(device)
    ens = MLPEnsemble(models, device=device)
    opt = StackedOptimizer(ens, optimizer, lrs, wds, epss, eps_mode, momentum, nesterov, betas)
    dev, dtype = ens.device, ens.dtype
    xtr, ytr = task.x_train.to(device=dev, dtype=dtype), task.y_train.to(dev)
    xte, yte = task.x_test.to(device=dev, dtype=dtype), task.y_test.to(dev)
    if ytr.dtype.is_floating_point:
        ytr, yte = ytr.to(dtype), yte.to(dtype)
    if k:
        with torch.no_grad():  # does each model's output fit the targets? (one forward of two rows)
            out2 = ens(xtr[:2])
        for r in range(k):
            check_output(out2[r], ytr[:2], loss, task.n_classes)
    initial = [float("nan")] * k  # train loss at step 0, per model (the divergence reference)
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
            point = {kk: v for kk, v in rec.items() if kk != "step"}
            live.emit(point, step, model=mi)
            if logs[mi] is not None:
                logs[mi](point, step)
            if step == 0:
                initial[mi] = rec["train/loss"]
            why = diverged_reason(rec["train/loss"], initial[mi], diverge_factor)
            if why is not None:
                results[mi].diverged_reason = why
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
        with autocast_context(dev, ac_dtype):
            out = ens(xb)
        values = stacked_loss_fn(loss, out.to(dtype) if ac_dtype is not None else out, yb, task.n_classes)
        lvs = values.detach().tolist()
        whys = [diverged_reason(v, initial[alive[r]], diverge_factor) for r, v in enumerate(lvs)]
        bad = [r for r, why in enumerate(whys) if why is not None]
        if bad:
            for r in bad:
                mi = alive[r]
                results[mi].diverged, results[mi].diverged_reason = True, whys[r]
                results[mi].history.append({"step": step, "train/loss": float("nan"), "diverged": 1})
                live.emit({"train/loss": float("nan"), "diverged": 1}, step, model=mi)
                if logs[mi] is not None:
                    logs[mi]({"train/loss": float("nan"), "diverged": 1}, step)
            del out, values
            if bs != n and xb.dim() == 3:
                keep = [r for r in range(len(alive)) if r not in bad]
                xb, yb = xb[keep], yb[keep]
            drop(bad)
            if not alive:
                break
            with autocast_context(dev, ac_dtype):
                out = ens(xb)
            values = stacked_loss_fn(loss, out.to(dtype) if ac_dtype is not None else out, yb, task.n_classes)
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
    out = []
    for i, (m, lr_k, s, wd, e, lg) in enumerate(zip(models, lrs, seeds, wds, epss, logs)):
        with live.as_model(i):  # train() emits as model 0: model i of this list
            out.append(train(m, task, lr=lr_k, seed=s, weight_decay=wd, eps=e, log=lg, **kwargs))
    return out


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
