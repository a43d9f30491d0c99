"""The one training loop: a stack of K >= 1 models (K = 1 is plain training), a batch source, an update,
one divergence rule and the one place that sends each recorded point to the sinks.

    for step = start .. steps:
        batch  = batches.next(alive)                         `paramlab.engine.batches`
        L      = loss(stack, batch)                          (K,) one loss per live model
        train_step(update, L)                                `paramlab.engine.step`: backward, update
        at step 0 (if asked), every `every` steps and the last: records = evaluate(step, alive)

Divergence (`paramlab.divergence`): a model whose step loss, or recorded train loss, is non-finite or
above `diverge_factor` x its initial loss has diverged: its history gets a record that says so, its
weights are written back as they are, and it drops out of the stack; the others go on (K = 1: training
ends). The initial loss is the step-0 record's train loss, or, when nothing is recorded at step 0, the
first step's loss (the loss at initialization on the first batch).

Every record (a dict of metrics at an optimizer step) goes to the model's history, to its `log(metrics,
step)` callable if given, and to `paramlab.live.emit(metrics, step, model=k)`: whoever runs the loop
decides where points go (`paramlab.live.sending_to`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .. import live
from ..divergence import DIVERGE_FACTOR, check_factor, diverged_reason
from .step import train_step


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per eval point: step, train/*, test/*, hooks'
    diverged: bool = False
    steps_done: int = 0
    diverged_reason: str | None = None  # e.g. "loss 1.7e+06 > 1e+03 x initial 0.9" (`paramlab.divergence`)
    step_losses: list[float] = field(default_factory=list)  # per step: the batch loss (when the caller asks)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


# evaluate(step, alive) -> one record per live model (dicts with "train/loss" and any other metrics)
Evaluate = Callable[[int, list], list]


@dataclass
class _Run:
    """The loop's state: results, initial losses and the live models (model index of each stack row)."""

    stack: object
    update: object
    results: list
    initial: list
    alive: list
    logs: list
    write_back: bool
    diverge_factor: float | None

    def send(self, mi: int, metrics: dict, step: int) -> None:
        if self.logs[mi] is not None:
            self.logs[mi]({k: v for k, v in metrics.items() if k != "step"}, step)
        live.emit(metrics, step, model=mi)

    def why(self, mi: int, loss: float) -> str | None:
        return diverged_reason(loss, self.initial[mi], self.diverge_factor)

    def stop(self, values: list[float]) -> bool:
        """Did a live model's step loss diverge? (A model without an initial loss takes this one.)"""
        for mi, v in zip(self.alive, values):
            if self.initial[mi] is None:
                self.initial[mi] = v
        return any(self.why(mi, v) is not None for mi, v in zip(self.alive, values))

    def drop(self, rows: list[int]) -> list[int]:
        """Take the stack rows `rows` out (their weights written back as they are); returns the kept rows."""
        if self.write_back:
            self.stack.write_back([self.alive[r] for r in rows], rows)
        keep = [r for r in range(len(self.alive)) if r not in rows]
        self.alive = [self.alive[r] for r in keep]
        if self.alive:
            self.stack.keep(keep)
            self.update.keep(keep)
        return keep

    def record(self, step: int, evaluate: Evaluate) -> None:
        """Evaluate the live models, send their records; drop those whose recorded train loss diverged."""
        bad = []
        for r, (mi, rec) in enumerate(zip(self.alive, evaluate(step, list(self.alive)))):
            self.results[mi].history.append(rec)
            self.send(mi, rec, step)
            if "train/loss" not in rec:  # a record without a train loss (MAML's): the steps' losses decide
                continue
            if step == 0:
                self.initial[mi] = rec["train/loss"]
                continue
            why = self.why(mi, rec["train/loss"])
            if why is not None:
                res = self.results[mi]
                res.diverged, res.diverged_reason = True, why
                rec["diverged"] = 1
                bad.append(r)
        if bad:
            self.drop(bad)

    def diverged_at_step(self, step: int, values: list[float]) -> list[int]:
        """The stack rows whose step loss diverged: each gets its record; returns them."""
        bad = []
        for r, (mi, v) in enumerate(zip(self.alive, values)):
            why = self.why(mi, v)
            if why is not None:
                res = self.results[mi]
                res.diverged, res.diverged_reason = True, why
                # the record of a diverged step: train/loss NaN (no result); the value is in the reason
                res.history.append({"step": step, "train/loss": float("nan"), "diverged": 1})
                self.send(mi, {"train/loss": float("nan"), "diverged": 1}, step)
                bad.append(r)
        return bad


def fit(stack, update, batches, loss: Callable, evaluate: Evaluate, *, steps: int, every: int,
        record_initial: bool = True, record_last: bool = True, diverge_factor: float | None = DIVERGE_FACTOR,
        results: Sequence[TrainResult] | None = None, initial: list | None = None, start: int = 1,
        logs: Sequence | None = None, keep_losses: bool = False, write_back: bool = True,
        on_step: Callable[[int], None] | None = None, bar=None) -> list[TrainResult]:
    """Train the K models of `stack` for steps start..steps; returns one `TrainResult` per model.

    loss(stack, batch) -> (K,) losses of the live rows (or an iterable of such, accumulated: MAML's
    episodes); evaluate(step, alive) -> their records (at step 0 when `record_initial`, every `every`
    steps and at `steps` when `record_last`). `results` / `initial` / `start`: where a
    resumed run goes on from (`initial` is updated in place: the divergence references). logs: one
    `log(metrics, step)` or None per model. keep_losses: keep every step's batch loss in
    `step_losses`. on_step(step): called after each step's records (periodic checkpoints). At the end
    the live models' weights are written back into `stack.models` (`write_back`).
    """
    check_factor(diverge_factor)
    k = len(stack.models)
    results = list(results) if results is not None else [TrainResult() for _ in range(k)]
    run = _Run(stack, update, results, initial if initial is not None else [None] * k,
               [m for m in range(k) if not results[m].diverged], list(logs) if logs is not None else [None] * k,
               write_back, diverge_factor)
    if len(run.logs) != k:
        raise ValueError(f"log has {len(run.logs)} entries for {k} models")
    if start == 1 and record_initial and run.alive:
        run.record(0, evaluate)
    for step in range(start, steps + 1):
        if not run.alive:
            break
        batch = batches.next(run.alive)
        values = train_step(update, loss(stack, batch), stop=run.stop)
        if keep_losses:
            for mi, v in zip(run.alive, values):
                results[mi].step_losses.append(v)
        bad = run.diverged_at_step(step, values)
        if bad:
            keep = run.drop(bad)
            if not run.alive:
                break
            batch = batch.rows(keep)
            values = train_step(update, loss(stack, batch))
        for mi in run.alive:
            results[mi].steps_done = step
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{values[0]:.3g}", refresh=False)
        if step % every == 0 or (record_last and step == steps):
            run.record(step, evaluate)
        if on_step is not None:
            on_step(step)
    if run.alive and write_back:
        stack.write_back(run.alive, range(len(run.alive)))
    return results
