"""One training loop for every experiment: seeded batches, measurement hooks, divergence detection,
progress bar, device and mixed precision, periodic atomic checkpoints and exact resume
(`paramlab.checkpoint`). Bad sizes, non-finite data and a model whose output does not fit the
targets are refused before any step (`paramlab.train_checks`); divergence is `paramlab.divergence`.
`paramlab.stacked` trains K MLPs at once with the same semantics.

Knows nothing about wandb: pass a `log(metrics, step)` callable (e.g. `tracking.Run.log`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from . import live
from .checkpoint import load_checkpoint, read_checkpoint, restore_state, save_checkpoint, train_state
from .divergence import DIVERGE_FACTOR, check_factor, diverged_reason
from .losses import default_loss, loss_fn
from .optim import optimizer as make_optimizer
from .precision import autocast_context, autocast_dtype
from .train_checks import check_data, check_dtype, check_output, check_sizes

__all__ = ["TrainResult", "evaluate", "load_checkpoint", "save_checkpoint", "seed_everything", "train", "train_step"]

# hook(step, model) -> dict of metrics (or None); called at step 0 and every `eval_every` steps
Hook = Callable[[int, nn.Module], "dict | None"]


@torch.no_grad()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, loss: str,
             n_classes: int | None = None, batch: int = 4096) -> dict[str, float]:
    """Loss (and accuracy for integer labels) of `model` (a module or any forward callable) on (x, y),
    in batches."""
    outs = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    res = {"loss": float(loss_fn(loss, outs, y, n_classes))}
    if y.dtype == torch.int64:
        res["acc"] = float((outs.argmax(-1) == y).float().mean())
    return res


def eval_subset(x: torch.Tensor, y: torch.Tensor, rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) itself when rows is None or >= len(x); else `rows` rows drawn without replacement by a
    generator seeded 0 (the same rows for every training seed, scheme and width), in ascending order."""
    if rows is None or rows >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:rows].sort().values
    return x[idx], y[idx]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per eval point: step, train/*, test/*, hooks'
    diverged: bool = False
    steps_done: int = 0
    diverged_reason: str | None = None  # e.g. "loss 1.7e+06 > 1e+03 x initial 0.9" (`paramlab.divergence`)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def train_step(model: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, loss: str | Callable = "mse", n_classes: int | None = None,
               stop: Callable[[float], bool] | None = None) -> float:
    """One optimizer step on the batch (x, y): zero the grads, forward, loss, backward, step.

    `loss` is a `paramlab.losses` name or a callable(out, y) -> scalar. Returns the loss of this
    forward pass (the one that gives the update). A non-finite loss is returned without a backward
    pass or an update, and so is one for which `stop(loss)` is true (`train` passes its divergence
    rule): the caller decides what divergence means (`train` stops).
    """
    opt.zero_grad(set_to_none=True)
    out = model(x)
    value = loss(out, y) if callable(loss) else loss_fn(loss, out, y, n_classes)
    lv = float(value.detach())
    if not math.isfinite(lv) or (stop is not None and stop(lv)):
        return lv
    value.backward()
    opt.step()
    return lv


def _autocast_forward(model: nn.Module, device, ac_dtype: torch.dtype, out_dtype: torch.dtype):
    """The model's forward under autocast, its output cast back to the parameters' dtype."""

    def forward(x):
        with autocast_context(device, ac_dtype):
            out = model(x)
        return out.to(out_dtype) if out.dtype != out_dtype else out

    return forward


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (paramlab's own draws use explicit generators)."""
    torch.manual_seed(int(seed))


def train(
    model: nn.Module,
    task,
    *,
    optimizer: str | torch.optim.Optimizer = "sgd",
    lr: float = 0.1,
    steps: int = 100,
    batch_size: int | None = None,
    loss: str | None = None,
    seed: int = 0,
    eval_every: int | None = None,
    hooks: Iterable[Hook] = (),
    log: Callable[[dict, int], None] | None = None,
    progress: bool | str = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: str | Path | None = None,
    diverge_factor: float | None = DIVERGE_FACTOR,
    eval_rows: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    autocast=None,
    **opt_kwargs,
) -> TrainResult:
    """Train `model` on `task` for `steps` optimizer steps and return its history.

    Args:
        optimizer: 'sgd' | 'adam' | 'adamw' (built by `paramlab.optimizer` from the plan) or a torch optimizer.
        batch_size: minibatch size (None: full batch). Batches come from a generator seeded by `seed`.
        loss: 'mse' or 'xent' (default: xent for classification, mse for regression).
        eval_every: evaluate train/test loss, run `hooks` and call `log` every this many steps (and at
            step 0 and the last step). Default: steps // 10.
        hooks: callables (step, model) -> dict of extra metrics, e.g. feature movement.
        progress: show a tqdm bar (a string is used as its description).
        checkpoint: save the training state there (atomically) at the end, and every `checkpoint_every`
            steps if given: weights, optimizer state, step, history, batch order and RNG state, the
            plan's fingerprint (`paramlab.checkpoint`; loadable with `torch.load(weights_only=True)`).
        resume: a checkpoint written by this function: continue from it to `steps`, giving exactly the
            result of the uninterrupted run (same model plan, optimizer, lr, batch size and seed required).
        diverge_factor: a loss above this times the initial train loss counts as diverged, as does a
            non-finite one (`paramlab.divergence`; None: only non-finite).
        eval_rows: evaluate train/test loss on at most this many rows of each split (None: all): a fixed
            subset, the same for every seed and scheme (`eval_subset`), so evaluations of a large task
            (the text transfer pair: 154k windows) stay cheap. Training batches are unaffected. The
            divergence rule then compares with the initial loss on that subset.
        dtype: of the data (default: the model's parameter dtype).
        device: move the model (and the task) there first (default: where the model is).
        autocast: 'bf16' (or 'fp16' on CUDA) runs forward passes under torch.autocast; weights,
            optimizer state and the loss stay in the model's dtype (`paramlab.precision`).
        opt_kwargs: optimizer options (momentum, nesterov, weight_decay, betas, eps, eps_mode,
            layer_lr) for a named optimizer (`paramlab.optimizer`).

    A diverged run ends training: `diverged=True`, `diverged_reason` says why, the last record has
    `diverged: 1`. Bad sizes, non-finite data or an output that does not fit the targets raise
    ValueError before any step.
    """
    check_sizes(steps, batch_size, eval_every)
    check_sizes(0, checkpoint_every, None)  # same rule: None or an int >= 1
    check_sizes(0, eval_rows, None)
    check_factor(diverge_factor)
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs checkpoint=<path>")
    check_data(task)
    loss = loss or default_loss(task)
    saved = read_checkpoint(resume) if resume is not None else None
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    if task.x_train.device != dev:
        task = task.to(dev)
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else make_optimizer(model, optimizer, lr=lr, **opt_kwargs)
    param_dtype = next(model.parameters()).dtype
    ac_dtype = autocast_dtype(autocast)
    check_dtype(dtype, param_dtype, ac_dtype is not None)
    dtype = dtype or param_dtype
    forward = model if ac_dtype is None else _autocast_forward(model, dev, ac_dtype, param_dtype)
    xtr, ytr = task.x_train.to(dtype), task.y_train
    xte, yte = task.x_test.to(dtype), task.y_test
    if ytr.dtype.is_floating_point:
        ytr, yte = ytr.to(dtype), yte.to(dtype)
    was_training = model.training
    model.eval()  # one side-effect-free forward of two rows: does the output fit the targets?
    with torch.no_grad():
        check_output(forward(xtr[:2]), ytr[:2], loss, task.n_classes)
    model.train(was_training)
    xtr_e, ytr_e = eval_subset(xtr, ytr, eval_rows)
    xte_e, yte_e = eval_subset(xte, yte, eval_rows)
    n = len(xtr)
    bs = n if batch_size is None else min(int(batch_size), n)
    gen = torch.Generator().manual_seed(int(seed))
    eval_given = eval_every  # None: the default steps // 10, which grows with steps
    eval_every = max(1, eval_every or max(1, steps // 10))
    res = TrainResult()
    # what a checkpoint must match to resume (steps may grow: a run can be continued further)
    run_args = {"optimizer": optimizer if isinstance(optimizer, str) else type(optimizer).__name__,
                "lr": float(lr), "batch_size": bs, "seed": int(seed), "loss": loss if isinstance(loss, str) else "custom",
                "eval_every": eval_given, "eval_rows": eval_rows}

    def record(step: int) -> dict:
        rec = {"step": step}
        rec.update({f"train/{k}": v for k, v in evaluate(forward, xtr_e, ytr_e, loss, task.n_classes).items()})
        rec.update({f"test/{k}": v for k, v in evaluate(forward, xte_e, yte_e, loss, task.n_classes).items()})
        with torch.no_grad():  # torch.func transforms (eNTK hooks) still differentiate inside
            for h in hooks:
                rec.update(h(step, model) or {})
        res.history.append(rec)
        point = {k: v for k, v in rec.items() if k != "step"}
        live.emit(point, step)
        if log is not None:
            log(point, step)
        return rec

    def diverge(step: int, reason: str) -> None:
        # the record of a diverged step: train/loss NaN (no result); the value is in the reason
        res.diverged, res.diverged_reason = True, reason
        if res.history and res.history[-1]["step"] == step:  # found at an eval point: that record says so
            res.history[-1]["diverged"] = 1
            return
        res.history.append({"step": step, "train/loss": float("nan"), "diverged": 1})
        live.emit({"train/loss": float("nan"), "diverged": 1}, step)
        if log is not None:
            log({"train/loss": float("nan"), "diverged": 1}, step)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "train", leave=False)
    model.train()
    if saved is None:
        initial = record(0)["train/loss"]
        perm, pos, start = torch.randperm(n, generator=gen), 0, 1
    else:
        st = restore_state(saved, model, opt, gen, run_args, resume, steps=steps)
        res.history, res.steps_done, initial = st["history"], st["step"], st["initial_loss"]
        res.diverged, res.diverged_reason = st["diverged"], st["diverged_reason"]
        perm, pos, start = st["perm"], st["pos"], st["step"] + 1
        if res.diverged:
            start = steps + 1  # nothing more to do
        if bar is not None:
            bar.update(min(st["step"], steps))

    def save(step: int) -> None:
        save_checkpoint(checkpoint, model, opt, step, extra=train_state(
            gen, perm, pos, res.history, initial, res.diverged, res.diverged_reason, run_args, steps=steps))

    for step in range(start, steps + 1):
        if bs == n:
            xb, yb = xtr, ytr
        else:
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + bs]
            pos += bs
            xb, yb = xtr[idx], ytr[idx]
        lv = train_step(forward, opt, xb, yb, loss, task.n_classes,
                        stop=lambda v: diverged_reason(v, initial, diverge_factor) is not None)
        why = diverged_reason(lv, initial, diverge_factor)
        if why is not None:
            diverge(step, why)
            break
        res.steps_done = step
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.3g}", refresh=False)
        if step % eval_every == 0 or step == steps:
            rec = record(step)
            why = diverged_reason(rec["train/loss"], initial, diverge_factor)
            if why is not None:
                diverge(step, why)
                break
        if checkpoint is not None and checkpoint_every is not None and step % checkpoint_every == 0 and step < steps:
            save(step)
    if bar is not None:
        bar.close()
    if checkpoint is not None:
        save(res.steps_done)
    return res
