"""What the Transformer-LM experiments (`lm_lr_transfer`, `lm_feature_learning`) share: the task, the
model of a grid point, the training protocol's keyword arguments, and the option check of the task."""

from __future__ import annotations

import functools

import torch

from ..models.transformer import transformer


@functools.lru_cache(maxsize=2)
def lm_task(name: str):
    """The registered language-model task `name` (`paramlab.data.LM_TASKS`, e.g. 'shakespeare_char')."""
    from ..data import get_lm_task

    return get_lm_task(name)


@functools.lru_cache(maxsize=4)
def eval_xy(name: str, n: int, context: int, seed: int, device: str):
    """The fixed held-out windows (n, context) every run of an experiment is scored on."""
    x, y = lm_task(name).eval_windows(n, context, seed=seed)
    return x.to(device), y.to(device)


class OnDevice:
    """The task with its windows moved to `device` (the draws stay on the CPU generator: same batches)."""

    def __init__(self, task, device):
        self.task, self.device = task, torch.device(device)

    def windows(self, *a, **kw):
        x, y = self.task.windows(*a, **kw)
        return x.to(self.device), y.to(self.device)


def lm_model(cfg: dict, task):
    """The grid point's `paramlab.transformer` (max_len = context: no unused position rows)."""
    return transformer(task.vocab_size, cfg["width"], depth=cfg["depth"], n_heads=cfg["n_heads"], scheme=cfg["scheme"],
                       base_width=cfg["base_width"], max_len=cfg["context"], seed=cfg["seed"],
                       dtype=getattr(torch, cfg["dtype"]), device=cfg["device"])


def protocol(cfg: dict) -> dict:
    """The keyword arguments of `lm_train.train_lm` / `train_lm_stacked` for the grid point."""
    return dict(steps=cfg["steps"], batch=cfg["batch"], context=cfg["context"], betas=cfg["betas"], eps=cfg["eps"],
                eval_xy=eval_xy(cfg["task"], cfg["n_eval"], cfg["context"], cfg["eval_seed"], cfg["device"]))


def check_task(v) -> str | None:
    from ..data import LM_TASKS

    return None if v in LM_TASKS else f"is not an LM task: known are {sorted(LM_TASKS)} (paramlab.data.LM_TASKS)"
