"""Training checkpoints: atomic, `torch.load(weights_only=True)`-loadable, tied to the model's plan.

A checkpoint is a dict of tensors and plain Python values only::

    {"format": 1, "model": state_dict, "optimizer": state_dict, "step": int,
     "plan": {"scheme": "mup", "fingerprint": "3f2a..."} or None (a model without a paramlab plan),
     "train": {...}}   # what `paramlab.train.train(resume=...)` needs to continue exactly:
                       # batch generator state, current permutation and position in it, history,
                       # initial loss, divergence, torch's global RNG state, and the run's arguments

Written with `paramlab.io.atomic_write` (temp file, fsync, rename), so a kill mid-save leaves the
previous checkpoint intact. Loading one into a model built with another plan (a muP checkpoint into
an SP model, another width, another base width) is an error naming both plans: the weights would
load without complaint and mean something else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from .io import atomic_write

__all__ = ["FORMAT", "load_checkpoint", "plan_fingerprint", "read_checkpoint", "restore_state", "save_checkpoint",
           "train_state"]

FORMAT = 1


def plan_fingerprint(model: nn.Module) -> dict | None:
    """{"scheme": name, "fingerprint": 12 hex digits of the plan's role table (shapes, roles, exponents,
    init stds, multipliers, lr multipliers)}, or None for a model without a paramlab plan."""
    from .parameterize import get_plan

    try:
        plan = get_plan(model)
    except ValueError:
        return None
    rows = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in plan.rows("sgd")]
    blob = json.dumps({"scheme": plan.scheme.name, "rows": rows}, sort_keys=True, default=str)
    return {"scheme": plan.scheme.name, "fingerprint": hashlib.sha1(blob.encode()).hexdigest()[:12]}


def _describe(p: dict | None) -> str:
    return "no paramlab plan" if p is None else f"scheme {p['scheme']!r} (plan {p['fingerprint']})"


def check_plan(saved: dict | None, model: nn.Module, path) -> None:
    """Raise ValueError naming both plans if the checkpoint's plan is not the model's."""
    mine = plan_fingerprint(model)
    if saved != mine:
        raise ValueError(f"checkpoint {path} was saved from a model with {_describe(saved)}, but this model has "
                         f"{_describe(mine)}: build the model with the checkpoint's scheme, width and base width")


def save_checkpoint(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer | None = None, step: int = 0,
                    extra: dict | None = None) -> Path:
    """Write {model, optimizer, step, plan, train} atomically (see the module docstring)."""
    path = Path(path)
    state = {"format": FORMAT, "model": model.state_dict(), "step": int(step), "plan": plan_fingerprint(model)}
    if opt is not None:
        state["optimizer"] = opt.state_dict()
    if extra is not None:
        state["train"] = extra
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path` (weights_only=True); a clear error if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise PermissionError(f"cannot read checkpoint {path}: permission denied") from None
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # no foreign object named: bytes that are no pickle
            raise ValueError(f"checkpoint {path} is damaged (not a torch file it can read): delete it and rerun, "
                             "training starts again from step 0") from None
        # weights_only refused an object: paramlab writes tensors and plain values only
        raise ValueError(f"checkpoint {path} holds Python objects that are not tensors or plain values, which "
                         "paramlab never writes (loading them could run code): it was not written by paramlab; "
                         "refused") from None
    except (EOFError, OSError, RuntimeError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as e:
        text = str(e).splitlines()[0][:120] if str(e) else ""
        why = "empty" if path.stat().st_size == 0 else f"{type(e).__name__}: {text}"
        raise ValueError(f"checkpoint {path} is damaged ({why}; truncated by a full disk or a copy cut short?): "
                         "delete it and rerun, training starts again from step 0") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a paramlab checkpoint (no model state and step)")
    if isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
        raise ValueError(f"checkpoint {path} has step {state['step']!r}, not a count of steps: it is damaged")
    state["_path"] = str(path)
    return state


def load_checkpoint(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer | None = None) -> int:
    """Load a checkpoint written by `save_checkpoint` into `model` (and `opt`); returns its step.
    Raises ValueError if the model's plan is not the checkpoint's."""
    state = read_checkpoint(path)
    check_plan(state.get("plan"), model, path)
    model.load_state_dict(state["model"])
    if opt is not None and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    return int(state["step"])


TRAIN_KEYS = ("gen", "perm", "pos", "history", "initial_loss", "diverged", "diverged_reason", "torch_rng", "args")


def train_state(gen: torch.Generator, perm: torch.Tensor, pos: int, history: list, initial_loss: float,
                diverged: bool, diverged_reason: str | None, run_args: dict, steps: int | None = None) -> dict:
    """What `train` needs to continue exactly where it stopped (plain values and tensors only); `steps`:
    the run's requested steps (a resume may not ask for fewer)."""
    return {"gen": gen.get_state(), "perm": perm.detach().cpu().clone(), "pos": int(pos),
            "history": [dict(r) for r in history], "initial_loss": float(initial_loss), "diverged": bool(diverged),
            "diverged_reason": diverged_reason, "torch_rng": torch.get_rng_state(), "args": dict(run_args),
            "steps": steps}


def restore_state(state: dict, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, run_args: dict,
                  path, steps: int | None = None) -> dict:
    """Load a `read_checkpoint` result into model, optimizer and batch generator for `train(resume=...)`;
    returns {step, perm, pos, history, initial_loss, diverged, diverged_reason}.

    The resume key is `run_args` (an eval_every left at its default is stored as None, so the default
    steps // 10 may follow the steps). `steps` may grow, never shrink: a checkpoint past `steps`, or
    from a run asked for more steps, is refused with the numbers (it would return the longer run)."""
    check_plan(state.get("plan"), model, path)
    tr = state.get("train")
    if tr is None or "optimizer" not in state:
        raise ValueError(f"checkpoint {path} has no training state to resume from (written by an older paramlab, "
                         "or by save_checkpoint without one): load its weights with load_checkpoint instead")
    missing = [k for k in TRAIN_KEYS if not isinstance(tr, dict) or k not in tr]
    if missing or not isinstance(tr["args"], dict):
        raise ValueError(f"checkpoint {path} has a damaged training state (missing {missing or ['args']}): delete it "
                         "and rerun, training starts again from step 0")
    done, total = int(state["step"]), tr.get("steps")
    if steps is not None and done > steps:
        raise ValueError(f"checkpoint {path} is at step {done}, past the requested steps={steps}: resume with "
                         f"steps >= {done} (a run may grow, never shrink), or start a fresh run without resume")
    if steps is not None and isinstance(total, int) and total > steps:
        raise ValueError(f"checkpoint {path} (step {done}) is from a run of steps={total}; resuming it with "
                         f"steps={steps} would cut that run short: resume with steps >= {total}, or start a fresh run")
    diff = {k: (tr["args"].get(k), v) for k, v in run_args.items() if tr["args"].get(k) != v}
    if diff:
        fmt = lambda v: "the default" if v is None else repr(v)  # noqa: E731
        raise ValueError(f"checkpoint {path} was written by a run with other arguments "
                         + ", ".join(f"{k}={fmt(a)} (now {fmt(b)})" for k, (a, b) in diff.items())
                         + ": resume with the same ones (only steps may change)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(tr["gen"])
    torch.set_rng_state(tr["torch_rng"])
    return {"step": int(state["step"]), "perm": tr["perm"], "pos": int(tr["pos"]), "history": list(tr["history"]),
            "initial_loss": tr["initial_loss"], "diverged": tr["diverged"], "diverged_reason": tr["diverged_reason"]}
