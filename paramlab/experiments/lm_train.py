"""Training a paramlab Transformer LM on an `LMTask` (`paramlab.data.text`): one by one (the reference)
and as a stacked ensemble (`paramlab.stacked.functional`), with the same batches and the same optimizer.

Protocol of one run (one model, one base learning rate, one seed):

    opt    = paramlab.optimizer(model, "adam", lr=lr, betas, eps)     per-tensor lr and eps from the plan
    gen    = torch.Generator().manual_seed(seed)                       the batch stream of this run
    step s = 1..steps:  x, y = task.windows(batch, context, "train", gen)      (B, T), (B, T)
                        loss = mean over B*T tokens of CE(model(x), y); backward; opt.step()
    metric = mean CE (nats/token) on fixed held-out windows (task.eval_windows(n_eval, context, seed))

A non-finite training loss ends the run: diverged (its val loss counts as +inf). The stacked path
draws model k's windows from its own generator seeded with seeds[k], so each model sees exactly the
batches its one-by-one run sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import live
from ..optim import optimizer as make_optimizer
from ..stacked.functional import Stacked
from ..stacked.optim import StackedOptimizer

__all__ = ["LMResult", "evaluate", "lm_loss", "sample", "train_lm", "train_lm_stacked"]


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


def train_lm(model, task, *, lr: float, seed: int, steps: int, batch: int, context: int, eval_xy,
             betas=(0.9, 0.999), eps: float = 1e-8, log=None) -> LMResult:
    """Train `model` under the protocol of the module docstring; `log(metrics, step)` gets the train loss."""
    opt = make_optimizer(model, "adam", lr=lr, betas=tuple(betas), eps=eps)
    gen = torch.Generator().manual_seed(int(seed))
    losses = []
    model.train()
    for step in range(1, steps + 1):
        x, y = task.windows(batch, context, "train", gen)
        loss = lm_loss(model(x), y)
        lv = float(loss.detach())
        losses.append(lv)
        if not math.isfinite(lv):
            return LMResult(math.inf, True, step - 1, losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            live.emit({"train/loss": lv}, step)
            if log is not None:
                log({"train/loss": lv}, step)
    val = evaluate(model, *eval_xy)
    return LMResult(val if math.isfinite(val) else math.inf, not math.isfinite(val), steps, losses)


def _per_model_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits (K, B, T, V), targets (K, B, T) -> (K,) mean CE per model."""
    k, v = logits.shape[0], logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, v), y.reshape(-1), reduction="none").view(k, -1).mean(1)


def train_lm_stacked(models: Sequence, task, *, lrs: Sequence[float], seeds: Sequence[int], steps: int, batch: int,
                     context: int, eval_xy, betas=(0.9, 0.999), eps: float = 1e-8, logs=None,
                     write_back: bool = True) -> list[LMResult]:
    """`train_lm(models[k], lr=lrs[k], seed=seeds[k], ...)` for every k as one stacked pass (one scheme and
    width per call: `Stacked` refuses a mix); one LMResult per model, the same divergence rule."""
    models = list(models)
    k = len(models)
    if len(lrs) != k or len(seeds) != k:
        raise ValueError(f"{k} models need {k} lrs and {k} seeds, got {len(lrs)} and {len(seeds)}")
    stack = Stacked(models)
    opt = StackedOptimizer(stack, "adam", lrs, [0.0] * k, [eps] * k, "gradient", 0.0, False, tuple(betas))
    uniq = sorted(set(int(s) for s in seeds))
    gens = {s: torch.Generator().manual_seed(s) for s in uniq}
    alive = list(range(k))  # model index of each stack row
    losses = [[] for _ in range(k)]
    results: list[LMResult | None] = [None] * k
    for step in range(1, steps + 1):
        if not alive:
            break
        # every generator draws once per step, as each one-by-one run does (also for dropped models'
        # seeds: a seed's stream must not depend on which of its models are still alive)
        drawn = {s: task.windows(batch, context, "train", gens[s]) for s in uniq}
        row_seeds = [int(seeds[i]) for i in alive]
        per_model = len(set(row_seeds)) > 1
        if per_model:
            x = torch.stack([drawn[s][0] for s in row_seeds])  # (K, B, T)
            y = torch.stack([drawn[s][1] for s in row_seeds])
        else:
            x, y1 = drawn[row_seeds[0]]  # (B, T), shared by every row
            y = y1.expand(len(alive), *y1.shape)
        for p in stack.params.values():
            p.grad = None
        loss_k = _per_model_ce(stack(x, per_model), y)  # (K,)
        lv = loss_k.detach().tolist()
        for r, v in enumerate(lv):
            losses[alive[r]].append(v)
        bad = [r for r, v in enumerate(lv) if not math.isfinite(v)]
        if bad:
            for r in bad:
                results[alive[r]] = LMResult(math.inf, True, step - 1, losses[alive[r]])
            if write_back:
                stack.write_back([models[alive[r]] for r in bad], bad)
            rows = [r for r in range(len(alive)) if r not in bad]
            alive = [alive[r] for r in rows]
            if not alive:
                break
            stack.keep(rows)
            opt.keep(stack, torch.as_tensor(rows))
            x = x[rows] if per_model else x
            y = y[rows]
            loss_k = _per_model_ce(stack(x, per_model), y)
        loss_k.sum().backward()
        opt.step(stack)
        if step % max(1, steps // 10) == 0 or step == steps:
            for r, i in enumerate(alive):
                point = {"train/loss": lv[r] if not bad else float(loss_k[r])}
                live.emit(point, step, model=i)
                if logs is not None:
                    logs[i](point, step)
    if alive:
        if write_back:
            stack.write_back([models[i] for i in alive], range(len(alive)))
        vals = _evaluate_stacked(stack, *eval_xy)
        for r, i in enumerate(alive):
            v = vals[r]
            results[i] = LMResult(v if math.isfinite(v) else math.inf, not math.isfinite(v), steps, losses[i])
    return results


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
