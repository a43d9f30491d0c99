"""Checks `train` and `train_ensemble` run before any step: bad sizes, data that is not finite, and a
model whose output does not fit the targets are errors that name the fix, never a run that reports
"diverged" or trains on something else.

Why each matters: ``batch_size=0`` gave an empty batch (NaN loss, "diverged"); ``batch_size=-3``
silently trained on ``perm[0:-3]``; a model with ``d_out`` 2 or 5 on a 1-output regression task
broadcasts inside the MSE and trains with no error; NaN in the data looked like divergence.
"""

from __future__ import annotations

import torch

MAX_SEED = 2 ** 32  # numpy's legacy seeding (mnist1d's generator) takes [0, 2**32); torch takes more


# Value rules of optimizer options and seeds: each returns None for a good value, else the reason (the
# runners' Option checks use them, so a bad value is refused before any run, never recorded as a run).

def momentum_reason(v) -> str | None:
    """Heavy-ball momentum mu in [0, 1): at mu >= 1 an old gradient never fades and the step grows without bound."""
    return None if 0 <= v < 1 else "must be in [0, 1) (at 1 or more past gradients never fade)"


def eps_reason(v) -> str | None:
    """Adam's eps > 0: at 0 a coordinate with zero gradient history divides 0 by 0 (NaN, not a divergence)."""
    return None if v > 0 else "must be > 0 (Adam divides by sqrt(v) + eps)"


def betas_reason(v) -> str | None:
    """Adam's (beta1, beta2), each in [0, 1)."""
    ok = (isinstance(v, (list, tuple)) and len(v) == 2
          and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v))
    return None if ok else "must be a list of two numbers in [0, 1)"


def seed_reason(v) -> str | None:
    """A seed is an int in [0, 2**32)."""
    return None if 0 <= v < MAX_SEED else "must be in [0, 2**32)"



def _int(name: str, v, low: int, allow_none: bool) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an int{' or None' if allow_none else ''}, got {v!r} ({type(v).__name__})")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")


def check_sizes(steps, batch_size, eval_every) -> None:
    """steps an int >= 0; batch_size None (full batch) or an int >= 1; eval_every None or an int >= 1."""
    _int("steps", steps, 0, False)
    _int("batch_size", batch_size, 1, True)
    _int("eval_every", eval_every, 1, True)


def check_dtype(dtype, param_dtype, autocast: bool) -> None:
    """The data's dtype is the parameters' (a float16 batch into float32 weights fails inside the first matmul),
    unless the forward runs under autocast."""
    if dtype is not None and dtype != param_dtype and not autocast:
        raise ValueError(f"dtype={dtype} casts the data to {dtype}, but the model's parameters are {param_dtype}: "
                         f"leave dtype unset (the parameters' dtype), convert the model (model.to({dtype})), or "
                         "train with autocast='bf16' for mixed precision")


def check_data(task) -> None:
    """Every float tensor of the task finite; a non-empty train split."""
    for name in ("x_train", "y_train", "x_test", "y_test"):
        t = getattr(task, name)
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"task {getattr(task, 'name', '?')!r}: {name} has {bad} NaN/inf entries; "
                             "clean the data (training on it would only report a divergence)")
    if len(task.x_train) == 0:
        raise ValueError(f"task {getattr(task, 'name', '?')!r} has no training rows")


def check_output(out: torch.Tensor, y: torch.Tensor, loss, n_classes: int | None) -> None:
    """The model's output `out` for len(y) rows fits the targets `y` under the named `loss`:
    (N, d_out) == y's shape for float targets, (N, n_classes) for integer labels (no broadcasting)."""
    if callable(loss):
        return  # a custom loss decides itself
    if y.dtype.is_floating_point:
        if out.shape != y.shape:
            raise ValueError(f"the model's output has shape {tuple(out.shape)} but the targets have "
                             f"{tuple(y.shape)}: build the model with d_out={y.shape[-1] if y.dim() > 1 else 1} "
                             "(MSE would broadcast the two and train on the wrong objective)")
    else:
        want = n_classes if n_classes is not None else None
        if out.dim() != 2 or out.shape[0] != y.shape[0] or (want is not None and out.shape[1] != want):
            raise ValueError(f"the model's output has shape {tuple(out.shape)} but the task has {y.shape[0]} labels "
                             f"of {want} classes: build the model with d_out={want}")
