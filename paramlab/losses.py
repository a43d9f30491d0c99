"""The losses every training path shares: `paramlab.train.train`, the stacked ensemble
(`paramlab.stacked`) and the coordinate check (`paramlab.measure.coord`).

    mse    0.5 * sum over the last (output) dim of (out - y)^2, mean over the rest; integer labels
           become one-hot vectors of n_classes (default: out's last dim)
    xent   cross-entropy of logits (..., C) against integer labels (...), mean over all of them
           (a language model's (B, T, C) logits are C-way predictions at B*T positions)

`loss_fn` reduces to a scalar; `stacked_loss_fn` keeps a leading model dim, (K, B, C) -> (K,),
computing for each model exactly what `loss_fn` computes for it alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "xent")


def default_loss(task) -> str:
    """'xent' for a classification task, 'mse' otherwise."""
    return "xent" if task.kind == "classification" else "mse"


def _check(name: str, y: torch.Tensor) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: known are {', '.join(LOSSES)}")
    if name == "xent" and y.dtype != torch.int64:
        raise ValueError("xent needs integer class labels (a classification task); use mse for real targets")


def loss_fn(name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """The scalar loss `name` of outputs `out` (..., C) against targets `y` (see the module docstring)."""
    _check(name, y)
    if name == "xent":
        if out.dim() > 2:  # (..., C) logits: one C-way prediction per position
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        return F.cross_entropy(out, y)
    if y.dtype == torch.int64:
        y = F.one_hot(y, n_classes or out.shape[-1]).to(out.dtype)
    return 0.5 * (out - y.to(out.dtype)).pow(2).sum(-1).mean()


def stacked_loss_fn(name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Per-model losses (K,) of out (K, B, C) against y (B, ...) (shared) or (K, B, ...)."""
    _check(name, y)
    if name == "xent":
        k, b, c = out.shape
        yy = y.expand(k, b) if y.dim() == 1 else y
        return F.cross_entropy(out.reshape(k * b, c), yy.reshape(k * b), reduction="none").view(k, b).mean(-1)
    if y.dtype == torch.int64:
        y = F.one_hot(y, n_classes or out.shape[-1]).to(out.dtype)
    return 0.5 * (out - y.to(out.dtype)).pow(2).sum(-1).mean(-1)
