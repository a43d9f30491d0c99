"""One training loop for every experiment: seeded batches, measurement hooks, divergence detection,
progress bar, device and mixed precision, checkpoints (loadable with `torch.load(weights_only=True)`).
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

from .losses import default_loss, loss_fn
from .optim import optimizer as make_optimizer
from .precision import autocast_context, autocast_dtype
from .store import atomic_write

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


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per eval point: step, train/*, test/*, hooks'
    diverged: bool = False
    steps_done: int = 0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def train_step(model: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, loss: str | Callable = "mse", n_classes: int | None = None) -> float:
    """One optimizer step on the batch (x, y): zero the grads, forward, loss, backward, step.

    `loss` is a `paramlab.losses` name or a callable(out, y) -> scalar. Returns the loss of this
    forward pass (the one that gives the update). A non-finite loss is returned without a backward
    pass or an update: the caller decides what divergence means (`train` stops).
    """
    opt.zero_grad(set_to_none=True)
    out = model(x)
    value = loss(out, y) if callable(loss) else loss_fn(loss, out, y, n_classes)
    lv = float(value.detach())
    if not math.isfinite(lv):
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
        checkpoint: save model (and optimizer) state there at the end (`load_checkpoint` reads it).
        dtype: of the data (default: the model's parameter dtype).
        device: move the model (and the task) there first (default: where the model is).
        autocast: 'bf16' (or 'fp16' on CUDA) runs forward passes under torch.autocast; weights,
            optimizer state and the loss stay in the model's dtype (`paramlab.precision`).
        opt_kwargs: optimizer options (momentum, nesterov, weight_decay, betas, eps, eps_mode,
            layer_lr) for a named optimizer (`paramlab.optimizer`).

    A non-finite loss ends training: `diverged=True`, the last record has `diverged: 1`.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    loss = loss or default_loss(task)
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    if task.x_train.device != dev:
        task = task.to(dev)
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else make_optimizer(model, optimizer, lr=lr, **opt_kwargs)
    param_dtype = next(model.parameters()).dtype
    dtype = dtype or param_dtype
    ac_dtype = autocast_dtype(autocast)
    forward = model if ac_dtype is None else _autocast_forward(model, dev, ac_dtype, param_dtype)
    xtr, ytr = task.x_train.to(dtype), task.y_train
    xte, yte = task.x_test.to(dtype), task.y_test
    if ytr.dtype.is_floating_point:
        ytr, yte = ytr.to(dtype), yte.to(dtype)
    n = len(xtr)
    bs = n if batch_size is None else min(int(batch_size), n)
    gen = torch.Generator().manual_seed(int(seed))
    eval_every = max(1, eval_every or max(1, steps // 10))
    res = TrainResult()

    def record(step: int) -> dict:
        rec = {"step": step}
        rec.update({f"train/{k}": v for k, v in evaluate(forward, xtr, ytr, loss, task.n_classes).items()})
        rec.update({f"test/{k}": v for k, v in evaluate(forward, xte, yte, loss, task.n_classes).items()})
        with torch.no_grad():  # torch.func transforms (eNTK hooks) still differentiate inside
            for h in hooks:
                rec.update(h(step, model) or {})
        res.history.append(rec)
        if log is not None:
            log({k: v for k, v in rec.items() if k != "step"}, step)
        return rec

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "train", leave=False)
    model.train()
    record(0)
    perm, pos = torch.randperm(n, generator=gen), 0
    for step in range(1, steps + 1):
        if bs == n:
            xb, yb = xtr, ytr
        else:
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + bs]
            pos += bs
            xb, yb = xtr[idx], ytr[idx]
        lv = train_step(forward, opt, xb, yb, loss, task.n_classes)
        if not math.isfinite(lv):
            res.diverged = True
            rec = {"step": step, "train/loss": float("nan"), "diverged": 1}
            res.history.append(rec)
            if log is not None:
                log({"train/loss": float("nan"), "diverged": 1}, step)
            break
        res.steps_done = step
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.3g}", refresh=False)
        if step % eval_every == 0 or step == steps:
            rec = record(step)
            if not math.isfinite(rec["train/loss"]):
                res.diverged = True
                res.history[-1]["diverged"] = 1
                break
    if bar is not None:
        bar.close()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, opt, res.steps_done)
    return res


def save_checkpoint(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer | None = None, step: int = 0) -> Path:
    """Write {model, optimizer, step} atomically; only tensors and plain containers (weights_only-safe)."""
    path = Path(path)
    state = {"model": model.state_dict(), "step": int(step)}
    if opt is not None:
        state["optimizer"] = opt.state_dict()
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer | None = None) -> int:
    """Load a checkpoint written by `save_checkpoint` (with weights_only=True); returns its step."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if opt is not None and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    return int(state["step"])
