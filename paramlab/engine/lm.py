"""Training a paramlab Transformer LM on an `LMTask` (`paramlab.data.text`) through the engine's loop: one by
one (the reference) and as a stack (`paramlab.engine.stack`), with the same batches and the same optimizer.

Protocol of one run (one model, one base learning rate, one seed):

    opt    = paramlab.optimizer(model, "adam", lr=lr, betas, eps)     per-tensor lr and eps from the plan
    gen    = torch.Generator().manual_seed(seed)                       the batch stream of this run
    step s = 1..steps:  x, y = task.windows(batch, context, "train", gen)      (B, T), (B, T)
                        loss = mean over B*T tokens of CE(model(x), y); backward; opt.step()
    metric = mean CE (nats/token) on fixed held-out windows (task.eval_windows(n_eval, context, seed))

Divergence is the engine's one rule (`paramlab.divergence`): a step loss that is non-finite or above
1e3 x the first step's loss (the loss at initialization, ~log V nats) ends the run: diverged (its val
loss counts as +inf). The stacked path draws model k's windows from its own generator seeded with
seeds[k] (`paramlab.engine.batches.TokenWindows`), so each model sees exactly the batches its one-by-one
run sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ..divergence import DIVERGE_FACTOR
from ..optim import optimizer as make_optimizer
from .batches import TokenWindows
from .loop import TrainResult, fit
from .stack import Single, Stacked
from .update import StackedUpdate, TorchUpdate


@dataclass
class LMResult:
    val_loss: float  # +inf if diverged
    diverged: bool
    steps_done: int
    train_losses: list = field(default_factory=list)  # per step: the minibatch loss


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits (B, T, V), targets (B, T) -> scalar."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten())


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, chunk: int = 64) -> float:
    """Mean CE (nats per token) of `model` on windows x, y (N, T), summed in float64."""
    total = 0.0
    for i in range(0, len(x), chunk):
        logits = model(x[i:i + chunk])
        total += float(F.cross_entropy(logits.flatten(0, 1).double(), y[i:i + chunk].flatten(), reduction="sum"))
    return total / y.numel()


def _per_model_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits (K, B, T, V), targets (K, B, T) or (B, T) shared -> (K,) mean CE per model."""
    k, v = logits.shape[0], logits.shape[-1]
    if y.dim() == logits.dim() - 2:
        y = y.expand(k, *y.shape)
    return F.cross_entropy(logits.reshape(-1, v), y.reshape(-1), reduction="none").view(k, -1).mean(1)


def _last_loss(results):
    """The loop's records of an LM run: the last step's batch loss (no evaluation during training)."""
    return lambda step, alive: [{"train/loss": results[mi].step_losses[-1]} for mi in alive]


def _fit(st, update, task, seeds, *, steps, batch, context, loss, logs, diverge_factor, write_back=True):
    results = [TrainResult() for _ in seeds]
    return fit(st, update, TokenWindows(task, batch, context, seeds), loss, _last_loss(results), steps=steps,
               every=max(1, steps // 10), record_initial=False, results=results, logs=logs, keep_losses=True,
               write_back=write_back, diverge_factor=diverge_factor)


def _result(res, val: float | None) -> LMResult:
    if res.diverged:
        return LMResult(math.inf, True, res.steps_done, res.step_losses)
    return LMResult(val if math.isfinite(val) else math.inf, not math.isfinite(val), res.steps_done, res.step_losses)


def train_lm(model, task, *, lr: float, seed: int, steps: int, batch: int, context: int, eval_xy,
             betas=(0.9, 0.999), eps: float = 1e-8, log=None,
             diverge_factor: float | None = DIVERGE_FACTOR, optimizer: str = "adam") -> LMResult:
    """Train `model` under the protocol of the module docstring; `log(metrics, step)` gets the train loss.
    diverge_factor: as in `paramlab.train` (None: only a non-finite loss diverges). `optimizer`: any
    `paramlab.optimizer` name; `betas` and `eps` reach its Adam part (the muon hybrid's AdamW), the
    others keep their own defaults."""
    adam_args = dict(betas=tuple(betas), eps=eps) if optimizer in ("adam", "adamw", "muon") else {}
    opt = make_optimizer(model, optimizer, lr=lr, **adam_args)
    model.train()
    res = _fit(Single(model), TorchUpdate(opt), task, [seed], steps=steps, batch=batch, context=context,
               loss=lambda st, b: lm_loss(st(b.x), b.y).reshape(1), logs=[log], diverge_factor=diverge_factor)[0]
    return _result(res, None if res.diverged else evaluate(model, *eval_xy))


def train_lm_stacked(models: Sequence, task, *, lrs: Sequence[float], seeds: Sequence[int], steps: int, batch: int,
                     context: int, eval_xy, betas=(0.9, 0.999), eps: float = 1e-8, logs=None,
                     write_back: bool = True, diverge_factor: float | None = DIVERGE_FACTOR,
                     optimizer: str = "adam") -> list[LMResult]:
    """`train_lm(models[k], lr=lrs[k], seed=seeds[k], ...)` for every k as one stacked pass (one scheme and
    width per call: `Stacked` refuses a mix); one LMResult per model, the same divergence rule."""
    if optimizer != "adam":
        raise ValueError(f"the stacked pass trains Adam only, got optimizer={optimizer!r}: use train_lm")
    models = list(models)
    k = len(models)
    if len(lrs) != k or len(seeds) != k:
        raise ValueError(f"{k} models need {k} lrs and {k} seeds, got {len(lrs)} and {len(seeds)}")
    st = Stacked(models)
    update = StackedUpdate(st, "adam", lrs, [0.0] * k, [eps] * k, "gradient", 0.0, False, tuple(betas))
    res = _fit(st, update, task, seeds, steps=steps, batch=batch, context=context,
               loss=lambda s, b: _per_model_ce(s(b.x, per_model=b.per_model), b.y),
               logs=logs, write_back=write_back, diverge_factor=diverge_factor)
    alive = [i for i in range(k) if not res[i].diverged]
    vals = _evaluate_stacked(st, *eval_xy) if alive else []
    return [_result(res[i], vals[alive.index(i)] if i in alive else None) for i in range(k)]


@torch.no_grad()
def _evaluate_stacked(stack: Stacked, x: torch.Tensor, y: torch.Tensor, chunk: int = 64) -> list[float]:
    """Mean CE per model on shared windows, reduced as `evaluate` reduces it."""
    total = torch.zeros(stack.k, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        logits = stack(x[i:i + chunk])  # (K, b, T, V)
        yy = y[i:i + chunk].flatten()
        for r in range(stack.k):
            total[r] += F.cross_entropy(logits[r].flatten(0, 1).double(), yy, reduction="sum")
    return (total / y.numel()).tolist()


@torch.no_grad()
def sample(model, task, prompt: str = "\n", n: int = 300, temperature: float = 1.0, seed: int = 0) -> str:
    """Draw `n` tokens from `model` after `prompt` (the last `model.max_len` tokens are the context)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    idx = task.encode(prompt)[None]  # (1, t)
    for _ in range(n):
        logits = model(idx[:, -model.max_len:])[0, -1].double() / temperature  # (V,)
        nxt = torch.multinomial(logits.softmax(-1), 1, generator=gen)
        idx = torch.cat([idx, nxt[None]], dim=1)
    return task.decode(idx[0, len(prompt):])
