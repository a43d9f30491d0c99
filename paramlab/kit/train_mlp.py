"""The built-in sweep runner ``train_mlp``: a paramlab MLP trained on a paramlab task.

Its options (`TRAIN_MLP_OPTIONS`: scheme, width, depth, lr, seed, task, optimizer, device, the plan
options, ...) are what a sweep spec's ``grid`` and ``fixed`` may set; runs of one width that differ
only in `PER_MODEL` keys are trained as one stacked ensemble (`paramlab.stacked`) where that pays.
`RUNNER` is listed in `paramlab.runners.BUILTIN`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Mapping, Sequence

from ..plan_options import PlanOptions
from ..runners import BatchKey, Option, Runner, SpecError
from ..models.build import BASE_WIDTH
from .checks import (CHECKS, check_activation, check_betas, check_device, check_optimizer, check_scheme,
                     check_task, non_negative, positive)

# ----------------------------------------------------------------------------------------------
# the built-in runner: an MLP on a paramlab task


_TASK_DEFAULTS = {
    "multi_index": {"n_train": 1024, "n_test": 512, "d": 16, "k": 2},
    "sparse_parity": {"n_train": 1024, "n_test": 512, "d": 10, "k": 3},
    "mnist1d": {},
    "digits": {},
}
# what may differ between the models of one stacked ensemble (everything else must be equal)
PER_MODEL = ("seed", "lr", "scheme", "base_width", "weight_decay", "eps", *PlanOptions.names())


def _plan_option(name: str) -> Option:
    default = getattr(PlanOptions(), name)
    types = {"gain": (int, float, None), "readout_zero_init": (bool,), "init": (dict, None)}.get(name, (int, float))
    return Option(default, types, check=CHECKS.get(name))


TRAIN_MLP_OPTIONS: dict[str, Option] = {
    "task": Option("multi_index", (str,), check=check_task, help="paramlab.data task name"),
    "task_args": Option({}, (dict,), help="arguments of the task factory (defaults per task)"),
    "data_seed": Option(0, (int,), check=CHECKS["data_seed"], help="seed of the task's data (unless task_args has a seed)"),
    "scheme": Option("mup", (str,), check=check_scheme),
    "width": Option(128, (int,), check=positive),
    "base_width": Option(BASE_WIDTH, (int,), check=positive),
    "depth": Option(2, (int,), check=positive),
    "activation": Option("relu", (str,), check=check_activation),
    "bias": Option(True, (bool,)),
    **{name: _plan_option(name) for name in PlanOptions.names()},
    "optimizer": Option("sgd", (str,), check=check_optimizer),
    "lr": Option(0.1, (int, float), check=positive),
    "momentum": Option(0.0, (int, float), check=CHECKS["momentum"]),
    "nesterov": Option(False, (bool,)),
    "weight_decay": Option(0.0, (int, float), check=non_negative),
    "betas": Option([0.9, 0.999], (list,), check=check_betas),
    "eps": Option(1e-8, (int, float), check=CHECKS["eps"]),
    "eps_mode": Option("gradient", (str,), choices=("gradient", "none")),
    "steps": Option(100, (int,), check=non_negative),
    "batch_size": Option(None, (int, None), check=positive),
    "loss": Option(None, (str, None), choices=(None, "mse", "xent")),
    "eval_every": Option(None, (int, None), check=positive),
    "seed": Option(0, (int,), check=CHECKS["seed"]),
    "device": Option("cpu", (str,), check=check_device),
    "precision": Option("fp32", (str,), choices=("fp32", "bf16")),
    "dtype": Option("float32", (str,), choices=("float32", "float64"), help="weights and data (float64 for equivalence checks)"),
}


def _task_kwargs(cfg: Mapping) -> dict:
    name = cfg["task"].strip().lower().replace("-", "_")
    kw = {**_TASK_DEFAULTS.get(name, {}), **dict(cfg.get("task_args") or {})}
    kw.setdefault("seed", cfg.get("data_seed", 0))
    return kw


@functools.lru_cache(maxsize=8)
def _cached_task(name: str, kwargs_json: str):
    from ..data import get_task

    return get_task(name, **json.loads(kwargs_json))


def _task(cfg: Mapping):
    return _cached_task(cfg["task"], json.dumps(_task_kwargs(cfg), sort_keys=True))


def _prepare_train_mlp(cfg: dict) -> dict:
    from ..data import TASKS

    name = cfg["task"].strip().lower().replace("-", "_")
    cfg["task"] = name
    kw = _task_kwargs(cfg)
    try:
        inspect.signature(TASKS[name]).bind(**kw)
    except TypeError as e:
        params = [p for p in inspect.signature(TASKS[name]).parameters if p != "kwargs"]
        raise SpecError(f"task_args {kw} do not fit task {name!r} ({e}); its arguments are {params}") from None
    cfg["task_args"] = {k: v for k, v in kw.items() if not (k == "seed" and "seed" not in (cfg.get("task_args") or {}))}
    if cfg["optimizer"].lower() == "sgd" and cfg.get("nesterov") and not cfg.get("momentum"):
        raise SpecError("nesterov needs momentum > 0")
    cfg["optimizer"] = cfg["optimizer"].lower()
    if cfg.get("precision") == "bf16" and cfg.get("dtype") == "float64":
        raise SpecError("precision 'bf16' runs float32 weights under autocast: use it with dtype 'float32'")
    return cfg


def _build_mlp(cfg: Mapping, task):
    import torch

    from ..models.mlp import mlp

    return mlp(task.d_in, task.d_out, cfg["width"], depth=cfg["depth"], scheme=cfg["scheme"],
               base_width=cfg["base_width"], activation=cfg["activation"], bias=cfg["bias"], seed=cfg["seed"],
               dtype=getattr(torch, cfg["dtype"]), **{k: cfg[k] for k in PlanOptions.names()})


def _train_kwargs(cfg: Mapping) -> dict:
    return dict(optimizer=cfg["optimizer"], steps=cfg["steps"], batch_size=cfg["batch_size"], loss=cfg["loss"],
                eval_every=cfg["eval_every"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                betas=tuple(cfg["betas"]), eps_mode=cfg["eps_mode"])


def _result(res) -> dict:
    final = {k: v for k, v in res.final.items() if k not in ("step", "diverged")}
    out = {**final, "steps_done": res.steps_done, "diverged": int(res.diverged), "history": res.history,
           "status": "diverged" if res.diverged else "finished"}
    if res.diverged_reason is not None:
        out["diverged_reason"] = res.diverged_reason  # the sweep records it in meta.json ("diverged")
    return out


def _autocast_arg(cfg: Mapping):
    return "bf16" if cfg.get("precision") == "bf16" else None


def train_mlp(config: Mapping) -> dict:
    """The built-in runner: train `paramlab.mlp` on a `paramlab.data` task with `paramlab.train.train`.

    Options: see TRAIN_MLP_OPTIONS (task, task_args, scheme, width, base_width, depth, optimizer, lr,
    steps, batch_size, seed, device, precision, ...). Returns the final train/test loss (and accuracy),
    steps_done, diverged, and the history.
    """
    from ..train import train

    cfg = _prepare_train_mlp({**{k: o.default for k, o in TRAIN_MLP_OPTIONS.items()}, **dict(config)})
    task = _task(cfg)
    model = _build_mlp(cfg, task)
    res = train(model, task, lr=cfg["lr"], seed=cfg["seed"], weight_decay=cfg["weight_decay"], eps=cfg["eps"],
                device=cfg["device"], autocast=_autocast_arg(cfg), **_train_kwargs(cfg))
    return _result(res)


def train_mlp_batch(configs: Sequence[Mapping]) -> list[dict]:
    """Several train_mlp configs that differ only in per-model options (seed, lr, scheme, ...), as one
    stacked ensemble (`paramlab.stacked.train_ensemble`). Same results as train_mlp on each."""
    from ..stacked import train_ensemble

    defaults = {k: o.default for k, o in TRAIN_MLP_OPTIONS.items()}
    cfgs = [_prepare_train_mlp({**defaults, **dict(c)}) for c in configs]
    keys = {_train_mlp_batch_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ValueError("train_mlp_batch: the configs differ in more than the per-model options")
    c0 = cfgs[0]
    task = _task(c0)
    models = [_build_mlp(c, task) for c in cfgs]
    results = train_ensemble(models, task, lr=[c["lr"] for c in cfgs], seed=[c["seed"] for c in cfgs],
                             weight_decay=[c["weight_decay"] for c in cfgs], eps=[c["eps"] for c in cfgs],
                             device=c0["device"], autocast=_autocast_arg(c0), **_train_kwargs(c0))
    return [_result(r) for r in results]


_train_mlp_batch_key = BatchKey(PER_MODEL)


def _train_mlp_batch_pays(cfg: Mapping) -> bool:
    from ..stacked import use_ensemble

    task = _task(cfg)
    bs = task.n_train if cfg["batch_size"] is None else min(cfg["batch_size"], task.n_train)
    return use_ensemble(cfg["width"], cfg["depth"], task.d_in, task.d_out, bs, 2, cfg["device"])


def _train_mlp_resources(configs: Sequence[Mapping]) -> dict:
    """1 CPU thread for small models (faster than 2 on a busy 2-core machine), all cores for large
    ones; on a GPU a quarter of it for models up to width 1024, a half up to 4096, else all of it."""
    c = configs[0]
    width, k = c["width"], len(configs)
    if str(c["device"]).startswith("cuda"):
        frac = 0.25 if width <= 1024 else 0.5 if width <= 4096 else 1.0
        return {"num_cpus": 1, "num_gpus": frac}
    big = width * width * c["depth"] * max(1, k) >= 2 * 1024 * 1024
    return {"num_cpus": (os.cpu_count() or 1) if big else 1, "num_gpus": 0}


RUNNER = Runner(
    "train_mlp", train_mlp, options=TRAIN_MLP_OPTIONS, prepare=_prepare_train_mlp, batch=train_mlp_batch,
    batch_key=_train_mlp_batch_key, batch_pays=_train_mlp_batch_pays, resources=_train_mlp_resources,
)
