"""Training wrappers around a model: DistributedDataParallel, DataParallel, FSDP1 and torch.compile.

paramlab keeps its plan on the model itself and names tensors as the *unwrapped* model does. A
wrapper adds a prefix to every parameter name (`module.` for DDP / DataParallel, `_orig_mod.` for
torch.compile, `_fsdp_wrapped_module.` for FSDP1, at every wrapped level), so

    unwrap(model)        the model inside all wrappers (by attribute: `.module`, `_orig_mod`)
    clean_name(name)     a wrapped parameter name as the unwrapped model spells it

FSDP2 (`fully_shard`) replaces no module and adds no prefix: the model is its own root and needs
nothing here. Wrappers are recognized by their class (so a user module that merely has a `.module`
attribute is left alone).
"""

from __future__ import annotations

from torch import nn


def _wrapper_kind(model: nn.Module) -> str | None:
    """'ddp', 'dp', 'fsdp1', 'compile' or None for a plain module."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return "ddp"
    if isinstance(model, nn.DataParallel):
        return "dp"
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        return "compile"
    if type(model).__name__ == "FullyShardedDataParallel" and hasattr(model, "_fsdp_wrapped_module"):
        return "fsdp1"
    return None


def wrapper_kinds(model: nn.Module) -> list[str]:
    """The wrappers around `model`, outermost first (e.g. ['compile', 'ddp'])."""
    kinds = []
    while (k := _wrapper_kind(model)) is not None:
        kinds.append(k)
        model = _inner(model, k)
    return kinds


def _inner(model: nn.Module, kind: str) -> nn.Module:
    if kind == "compile":
        return model._orig_mod
    if kind == "fsdp1":
        return model._fsdp_wrapped_module
    return model.module


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside every DDP / DataParallel / FSDP1 / torch.compile wrapper (itself if none)."""
    while (k := _wrapper_kind(model)) is not None:
        model = _inner(model, k)
    return model


def clean_name(name: str, kinds=None) -> str:
    """A parameter name of a wrapped model as the unwrapped model spells it.

    Removes the wrappers' segments (`_orig_mod.`, `_fsdp_wrapped_module.`, ...). A leading `module.`
    is removed only when `kinds` says a DDP / DataParallel wrapper is there (a user's submodule may be
    called `module`).
    """
    parts = name.split(".")
    lead = 0
    for k in kinds or ():
        if k in ("ddp", "dp") and lead < len(parts) and parts[lead] == "module":
            lead += 1
        elif k == "compile" and lead < len(parts) and parts[lead] == "_orig_mod":
            lead += 1
    parts = parts[lead:]
    return ".".join(p for p in parts if p not in ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"))


def named_parameters(model: nn.Module):
    """(clean name, parameter) of a possibly wrapped model, each tensor once, in the model's order."""
    kinds = wrapper_kinds(model)
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield clean_name(name, kinds), p


def check_not_flattened(model: nn.Module) -> None:
    """Refuse FSDP1 with flattened parameters: one FlatParameter holds many tensors of different roles."""
    for name, p in model.named_parameters():
        if type(p).__name__ == "FlatParameter" or name.endswith("_flat_param"):
            raise ValueError(
                f"parameter {name!r} is an FSDP FlatParameter: FSDP1 with use_orig_params=False merges tensors of "
                "different roles into one, so no per-tensor learning rate can be set. Wrap with "
                "FullyShardedDataParallel(..., use_orig_params=True), or use FSDP2 (torch.distributed.fsdp.fully_shard)"
            )
