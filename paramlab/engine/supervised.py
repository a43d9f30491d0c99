"""Training on a supervised task (x, y tensors: `paramlab.data`), one model or a stack of K, through the
engine's loop: seeded minibatches, evaluation records, hooks, divergence, progress bar, device and mixed
precision; one model also gets periodic atomic checkpoints and exact resume (`paramlab.checkpoint`).
Bad sizes, non-finite data and a model whose output does not fit the targets are refused before any
step (`paramlab.train_checks`).

`train_stack(models, ...)` equals `[train(m, ...) for m in models]` (same batches, optimizer, records and
divergence handling per model; float64: 1e-10 relative, tests/test_stacked.py) in one pass over stacked
weights (`paramlab.engine.stack`). `train_many` stacks where `stacking_pays` says it pays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .. import live
from ..checkpoint import read_checkpoint, restore_state, save_checkpoint, train_state
from ..divergence import DIVERGE_FACTOR, check_factor
from ..losses import default_loss, loss_fn, stacked_loss_fn
from ..models.mlp import MLP
from ..optim import optimizer as make_optimizer
from ..precision import autocast_context, autocast_dtype
from ..train_checks import check_data, check_dtype, check_output, check_sizes
from .batches import TensorBatches
from .loop import TrainResult, fit
from .stack import STACK_MAX_FLOPS, Single, stack, stacking_pays
from .update import StackedUpdate, TorchUpdate, stackable_optimizer

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


# Evaluation chunk of a stack: rows per chunk such that one (K, rows, width) activation holds about this
# many elements. A (8, 2048, 256) float32 activation is 16 MB, far outside the cache, and each fresh
# allocation that large page-faults; 1 MB chunks (128 rows at K = 8, width 256: a training batch's
# size, so the allocator reuses the training step's blocks) run several times faster on CPU.
_EVAL_ELEMENTS = 1 << 18


@torch.no_grad()
def evaluate_stack(st, x, y, loss, n_classes, ac_dtype) -> list[dict]:
    """`evaluate` of each model of a stack, in chunks of rows (the forward under autocast if asked)."""
    width = max(p.shape[1] for p in st.params.values() if p.dim() >= 3)
    batch = max(1, _EVAL_ELEMENTS // (next(iter(st.params.values())).shape[0] * width))
    with autocast_context(st.device, ac_dtype):
        chunks = [st(x[i:i + batch]) for i in range(0, len(x), batch)]
    outs = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
    res = [{"loss": float(v)} for v in stacked_loss_fn(loss, outs, y, n_classes).tolist()]
    if y.dtype == torch.int64:
        for r, a in zip(res, (outs.argmax(-1) == y).float().mean(-1).tolist()):
            r["acc"] = float(a)
    return res


def eval_subset(x: torch.Tensor, y: torch.Tensor, rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) itself when rows is None or >= len(x); else `rows` rows drawn without replacement by a
    generator seeded 0 (the same rows for every training seed, scheme and width), in ascending order."""
    if rows is None or rows >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:rows].sort().values
    return x[idx], y[idx]


def _task_tensors(task, device, dtype):
    """(x_train, y_train, x_test, y_test) on `device`, inputs (and regression targets) in `dtype`."""
    xtr, ytr = task.x_train.to(device=device, dtype=dtype), task.y_train.to(device)
    xte, yte = task.x_test.to(device=device, dtype=dtype), task.y_test.to(device)
    if ytr.dtype.is_floating_point:
        ytr, yte = ytr.to(dtype), yte.to(dtype)
    return xtr, ytr, xte, yte


def _records(evals, models: list, hooks: list, write_back=None):
    """evaluate(step, alive) for the loop: train/* and test/* metrics of each live model, then the hooks
    (on the model, its weights written back first by `write_back(alive)` when stacked)."""

    def records(step: int, alive: list) -> list[dict]:
        tr, te = evals()
        if hooks and write_back is not None:
            write_back(alive)
        out = []
        for r, mi in enumerate(alive):
            rec = {"step": step}
            rec.update({f"train/{k}": v for k, v in tr[r].items()})
            rec.update({f"test/{k}": v for k, v in te[r].items()})
            if hooks:
                models[mi].train()
                with torch.no_grad():  # torch.func transforms (eNTK hooks) still differentiate inside
                    for h in hooks:
                        rec.update(h(step, models[mi]) or {})
            out.append(rec)
        return out

    return records


def _bar(progress, steps, default):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=progress if isinstance(progress, str) else default, leave=False)


def _autocast_forward(model: nn.Module, device, ac_dtype: torch.dtype, out_dtype: torch.dtype):
    """The model's forward under autocast, its output cast back to the parameters' dtype."""

    def forward(x):
        with autocast_context(device, ac_dtype):
            out = model(x)
        return out.to(out_dtype) if out.dtype != out_dtype else out

    return forward


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
        log: log(metrics, step) at every record (records also go to `paramlab.live.emit`).
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
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else make_optimizer(model, optimizer, lr=lr, **opt_kwargs)
    forward, (xtr, ytr, xte, yte) = _checked_forward(model, task, loss, dtype, autocast)
    xtr_e, ytr_e = eval_subset(xtr, ytr, eval_rows)
    xte_e, yte_e = eval_subset(xte, yte, eval_rows)
    evals = lambda: ([evaluate(forward, xtr_e, ytr_e, loss, task.n_classes)],  # noqa: E731
                     [evaluate(forward, xte_e, yte_e, loss, task.n_classes)])
    batches = TensorBatches(xtr, ytr, batch_size, [seed])
    eval_given = eval_every  # None: the default steps // 10, which grows with steps (a resume may add steps)
    eval_every = max(1, eval_every or max(1, steps // 10))
    # what a checkpoint must match to resume (steps may grow: a run can be continued further)
    run_args = {"optimizer": optimizer if isinstance(optimizer, str) else type(optimizer).__name__,
                "lr": float(lr), "batch_size": batches.bs, "seed": int(seed),
                "loss": loss if isinstance(loss, str) else "custom", "eval_every": eval_given,
                "eval_rows": eval_rows}
    ckpt = _Checkpoints(checkpoint, checkpoint_every, steps, model, opt, batches, run_args)
    bar = _bar(progress, steps, "train")
    model.train()
    start = ckpt.resume(saved, resume, bar)
    fit(Single(model, forward), TorchUpdate(opt), batches, lambda st, b: _loss(loss, st(b.x), b.y, task.n_classes),
        _records(evals, [model], list(hooks)), steps=steps, every=eval_every, diverge_factor=diverge_factor,
        results=[ckpt.res], initial=ckpt.initial, start=start, logs=[log], on_step=ckpt.periodic, bar=bar)
    if bar is not None:
        bar.close()
    ckpt.save(ckpt.res.steps_done)
    return ckpt.res


def _checked_forward(model: nn.Module, task, loss, dtype, autocast):
    """The forward to train with (under autocast if asked) and the task's tensors on the model's device, after
    one side-effect-free forward of two rows: does the output fit the targets?"""
    dev = next(model.parameters()).device
    param_dtype = next(model.parameters()).dtype
    ac_dtype = autocast_dtype(autocast)
    check_dtype(dtype, param_dtype, ac_dtype is not None)
    forward = model if ac_dtype is None else _autocast_forward(model, dev, ac_dtype, param_dtype)
    data = _task_tensors(task, dev, dtype or param_dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        check_output(forward(data[0][:2]), data[1][:2], loss, task.n_classes)
    model.train(was_training)
    return forward, data


class _Checkpoints:
    """One model's training state on disk: periodic and final atomic checkpoints, and exact resume
    (`paramlab.checkpoint`); `res` and `initial` are the run's result and divergence reference."""

    def __init__(self, path, every, steps, model, opt, batches: TensorBatches, run_args: dict):
        self.path, self.every, self.steps = path, every, steps
        self.model, self.opt, self.batches, self.run_args = model, opt, batches, run_args
        self.res, self.initial = TrainResult(), [None]

    def resume(self, saved, where, bar) -> int:
        """Load a checkpoint read from `where` (None: a fresh run); returns the first step to run."""
        if saved is None:
            return 1
        st = restore_state(saved, self.model, self.opt, self.batches.gen, self.run_args, where, steps=self.steps)
        self.res.history, self.res.steps_done, self.initial[0] = st["history"], st["step"], st["initial_loss"]
        self.res.diverged, self.res.diverged_reason = st["diverged"], st["diverged_reason"]
        self.batches.restore(st["perm"], st["pos"])
        if bar is not None:
            bar.update(min(st["step"], self.steps))
        return st["step"] + 1

    def save(self, step: int) -> None:
        if self.path is None:
            return
        b, res = self.batches, self.res
        save_checkpoint(self.path, self.model, self.opt, step, extra=train_state(
            b.gen, b.perm, b.pos, res.history, self.initial[0], res.diverged, res.diverged_reason, self.run_args, steps=self.steps))

    def periodic(self, step: int) -> None:
        if self.every is not None and step % self.every == 0 and step < self.steps:
            self.save(step)


def _loss(loss, out, y, n_classes) -> torch.Tensor:
    """One model's loss as a (1,) tensor: a `paramlab.losses` name or a callable(out, y) -> scalar."""
    value = loss(out, y) if callable(loss) else loss_fn(loss, out, y, n_classes)
    return value.reshape(1)


def _as_list(value, k: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise ValueError(f"{name} has {len(value)} entries for {k} models")
        return list(value)
    return [value] * k


def train_stack(
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
    betas: tuple[float, float] | None = None,
    eps: float | Sequence[float] = 1e-8,
    eps_mode: str = "gradient",
    hooks: Iterable[Hook] = (),
    log: Sequence[Callable[[dict, int], None] | None] | None = None,
    progress: bool | str = False,
    device=None,
    autocast: str | torch.dtype | None = None,
    diverge_factor: float | None = DIVERGE_FACTOR,
) -> list[TrainResult]:
    """Train K paramlab models of one architecture together; returns one `TrainResult` per model.

    Equivalent to `train(models[k], task, optimizer=optimizer, lr=lr[k], seed=seed[k], ...)` for each k
    (same batches, same optimizer, same history records and divergence handling: a diverged model drops
    out of the stack, the others go on), but in one pass over stacked weights. `lr`, `seed`,
    `weight_decay` and `eps` may be one value or one per model; paramlab MLPs may differ in scheme and
    base width (same shapes). The trained weights are written back into `models` at the end (and
    before `hooks` run at eval points).

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
    ac_dtype = autocast_dtype(autocast)
    loss = loss or default_loss(task)
    if device is not None:
        for m in models:
            m.to(device)
    st = stack(models, device=device)
    update = StackedUpdate(st, optimizer, lrs, wds, epss, eps_mode, momentum, nesterov, betas)
    xtr, ytr, xte, yte = _task_tensors(task, st.device, st.dtype)
    with torch.no_grad():  # does each model's output fit the targets? (one forward of two rows)
        out2 = st(xtr[:2])
    for r in range(k):
        check_output(out2[r], ytr[:2], loss, task.n_classes)

    def losses(s, b):
        with autocast_context(s.device, ac_dtype):
            out = s(b.x, per_model=b.per_model)
        return stacked_loss_fn(loss, out.to(s.dtype) if ac_dtype is not None else out, b.y, task.n_classes)

    evals = lambda: (evaluate_stack(st, xtr, ytr, loss, task.n_classes, ac_dtype),  # noqa: E731
                     evaluate_stack(st, xte, yte, loss, task.n_classes, ac_dtype))
    for m in models:
        m.train()
    bar = _bar(progress, steps, f"ensemble x{k}")
    results = fit(st, update, TensorBatches(xtr, ytr, batch_size, seeds), losses,
                  _records(evals, models, list(hooks), st.write_back), steps=steps,
                  every=max(1, eval_every or max(1, steps // 10)), diverge_factor=diverge_factor, logs=logs, bar=bar)
    if bar is not None:
        bar.close()
    return results


def train_sequential(models: Sequence[nn.Module], task, *, lr=0.1, seed=0, weight_decay=0.0, eps=None,
                     log=None, **kwargs) -> list[TrainResult]:
    """The reference: `train` on each model in turn (same arguments as `train_stack`; `eps` reaches the
    optimizer only when given, since Lion and Muon take none)."""
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
            extra = {} if e is None else {"eps": e}
            out.append(train(m, task, lr=lr_k, seed=s, weight_decay=wd, log=lg, **extra, **kwargs))
    return out


def step_flops(width: int, depth: int, d_in: int, d_out: int, batch: int) -> float:
    """Training FLOPs of one step of one MLP: 6 * batch * (number of matmul weights)
    (`paramlab.engine.stack.model_step_flops` of the MLP)."""
    weights = d_in * width + (depth - 1) * width * width + width * d_out
    return 6.0 * batch * weights


def use_ensemble(width: int, depth: int, d_in: int, d_out: int, batch: int, k: int, device="cpu") -> bool:
    """`stacking_pays` for K paramlab MLPs of this shape, from their sizes alone (no model built)."""
    limit = STACK_MAX_FLOPS.get(("mlp", torch.device(device).type))
    return k >= 2 and limit is not None and step_flops(width, depth, d_in, d_out, batch) <= limit


def train_many(models: Sequence[nn.Module], task, *, mode: str = "auto", batch_size: int | None = None,
               device=None, **kwargs) -> list[TrainResult]:
    """Train K models: stacked (`mode='ensemble'`), one after another (`'sequential'`), or whichever
    `stacking_pays` picks (`'auto'`; an optimizer the stacked update has no kernel for: sequential).
    Arguments as `train_stack`."""
    if mode not in ("auto", "ensemble", "sequential"):
        raise ValueError(f"mode must be 'auto', 'ensemble' or 'sequential', got {mode!r}")
    models = list(models)
    if mode == "auto":
        # the FLOP count of the rule is exact for MLPs (one row per example); others train one by one here
        n = len(task.x_train)
        bs = n if batch_size is None else min(int(batch_size), n)
        m0 = models[0]
        dev = device or next(m0.parameters()).device
        ok = (all(isinstance(m, MLP) for m in models) and stackable_optimizer(kwargs.get("optimizer", "sgd"))
              and stacking_pays(m0, task.x_train[:bs], len(models), dev))
        mode = "ensemble" if ok else "sequential"
    if mode == "ensemble":
        return train_stack(models, task, batch_size=batch_size, device=device, **kwargs)
    return train_sequential(models, task, batch_size=batch_size, device=device, **kwargs)
