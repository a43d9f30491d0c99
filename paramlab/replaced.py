"""A planned layer replaced after `parameterize`: found, and refused with the fix.

The plan, the multiplier hooks and the learning rates are bound to the modules `parameterize` saw. A
layer put in their place afterwards under the same name (``model.out = nn.Linear(...)`` for a new
fine-tuning head, Hugging Face's ``resize_token_embeddings``) has none of the hooks: it would run
without its forward multiplier (a muP readout 1/m times too large), with PyTorch's default init,
while `role_table` and `paramlab.optimizer` still show the old numbers. So:

  * `stamp` marks every module the plan covers (an entry in its ``__dict__``: deepcopy, pickle and
    state_dict keep it; a new module object does not have it);
  * `check` finds a covered use whose module lost its stamp or whose tensor no longer has the plan's
    shape, and raises a ValueError that names each and the fix. `paramlab.get_plan` runs it, so
    `role_table`, `paramlab.optimizer`, export and checkpoints refuse a changed model;
  * a layer assigned into a stamped module's place (torch's global module-registration hook sees every
    such assignment, ``setattr`` and ``add_module`` alike) gets a forward pre-hook that raises the same
    error, so the first forward pass through it stops instead of training it unscaled. Nothing runs
    per forward while no planned layer was replaced.

A parameter assigned anew with the plan's shape (loading weights with ``assign=True``, re-tying an
embedding) is the same use and passes. A tensor resized in place inside its planned module (Hugging
Face resizes a tied embedding that way: ``weight.data = ...``) keeps its module's multiplier, so its
forward runs; `get_plan` refuses it, since the plan's shape (and possibly its width multiplier) is stale,
until `paramlab.parameterize.replan_resized` takes in the new shape of a dim that is not a width (a readout's outputs, a
vocabulary). The fix is to change the model before `parameterize`, or to
re-plan it: ``paramlab.unparameterize(model)`` then ``paramlab.parameterize(model, ..., reinit=False)``.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from torch import nn

STAMP = "_paramlab_planned"
_HELD = "held"  # the stamp of a submodule whose tensors the plan gives to a parent (attr "out_proj.weight")
_registered = []


def _on_assign(parent, name, value):
    """torch's global module-registration hook: a new module put where a planned one was gets `Replaced`; so
    does its parent where the parent reads the old one's tensors itself (nn.MultiheadAttention's out_proj is
    used by the functional call, never called, so a hook on it alone would never run)."""
    old = parent.__dict__.get("_modules", {}).get(name)
    if isinstance(value, nn.Module) and old is not None and old is not value and _planned(old) and not _planned(value):
        hook = Replaced(f"{name} was replaced by a new {type(value).__name__} after parameterize (it was a "
                        f"{type(old).__name__})")
        value.register_forward_pre_hook(hook)
        if old.__dict__.get(STAMP) == _HELD:
            parent.register_forward_pre_hook(ReplacedChild(hook.what, name))
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is not None:  # torch.compile ignores hooks added after it traced (skip_nnmodule_hook_guards): retrace
            dynamo.reset()


def _planned(module: nn.Module) -> bool:
    """Whether `module` or a module inside it is covered by a plan (a block holds planned layers)."""
    return any(STAMP in m.__dict__ for m in module.modules())


def _register_global_hook() -> None:
    if not _registered:
        _registered.append(nn.modules.module.register_module_module_registration_hook(_on_assign))


def _uses(plan):
    """(use name, module name, attribute, planned shape) of every tensor and further use in the plan."""
    shapes = {t.name: tuple(t.shape) for t in plan.tensors}
    for t in plan.tensors:
        yield t.name, t.module, t.attr, shapes[t.name]
    for u in plan.uses:
        yield u.name, u.module, u.attr, shapes[u.tensor]


def stamp(model: nn.Module, plan) -> None:
    """Mark the modules `plan` covers (see the module docstring)."""
    _register_global_hook()
    for _, mname, attr, _ in _uses(plan):
        mod = model.get_submodule(mname)
        mod.__dict__[STAMP] = True
        if "." in attr:  # a tensor of a submodule that its parent reads (nn.MultiheadAttention's out_proj)
            mod.get_submodule(attr.rpartition(".")[0]).__dict__.setdefault(STAMP, _HELD)


def problems(model: nn.Module, plan) -> list[str]:
    """What changed since `plan` was made: one line per replaced module or reshaped tensor."""
    out, seen = [], set()
    for name, mname, attr, shape in _uses(plan):
        try:
            mod = model.get_submodule(mname)
        except AttributeError:
            out.append(f"{name}: module {mname!r} is gone")
            continue
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        now = tuple(obj.shape) if isinstance(obj, torch.Tensor) else None
        if STAMP not in mod.__dict__:
            if mname not in seen:
                seen.add(mname)
                same = "same shape" if now == shape else (f"{name}: plan shape {list(shape)}, now "
                                                          f"{list(now) if now is not None else 'none'}")
                out.append(f"{mname or '(the model)'} was replaced by a new {type(mod).__name__} after "
                           f"parameterize ({same})")
        elif "." in attr and STAMP not in getattr(_holder(mod, attr), "__dict__", {}):
            sub = f"{mname}.{attr.rpartition('.')[0]}".lstrip(".")
            if sub not in seen:
                seen.add(sub)
                out.append(f"{sub} was replaced by a new {type(_holder(mod, attr)).__name__} after parameterize "
                           f"(its parent {mname or '(the model)'} reads its tensors)")
        elif now != shape:
            out.append(f"{name} has shape {list(now) if now is not None else 'none'} now (replaced or resized "
                       f"in place, e.g. by resize_token_embeddings); the plan's is {list(shape)}")
    return out


def _holder(mod: nn.Module, attr: str):
    """The submodule of `mod` that holds the tensor at dotted `attr` (None where the path is gone)."""
    try:
        return mod.get_submodule(attr.rpartition(".")[0])
    except AttributeError:
        return None


# kind -> role -> the dims of the tensor that are widths (by the role's definition: an output layer's fan-out
# is its number of outputs, an input layer's fan-in the data's size); a resize may change only the others
_WIDTH_DIMS = {
    "linear": {"input": {0}, "output": {1}, "hidden": {0, 1}},
    "conv": {"input": {0}, "output": {1}, "hidden": {0, 1}},
    "linear_t": {"input": {1}, "output": {0}, "hidden": {0, 1}},
    "embedding": {"input": {1}, "output": {1}},
    "bias": {"vector": {0}, "scalar": set()},
    "norm": {"vector": {0}, "scalar": set()},
}


def resized_plan(model: nn.Module, plan):
    """`plan` with the new shapes of tensors resized in place in a dim that is not a width (the number of
    outputs of a readout, a vocabulary); their multipliers and learning rates stay, as they depend on the
    width dims only. Raises ValueError for a changed width dim (or a kind/role whose width dims paramlab
    does not know); a replaced module is left for `check` to report. See `paramlab.parameterize.replan_resized`."""
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors, bad = [], []
    for t in plan.tensors:
        now = tuple(params[t.name].shape) if t.name in params else None
        if now is None or now == tuple(t.shape) or STAMP not in model.get_submodule(t.module).__dict__:
            tensors.append(t)  # unchanged, or a case `check` reports
            continue
        widths = _WIDTH_DIMS.get(t.kind, {}).get(t.role)
        changed = {i for i, (a, b) in enumerate(zip(now, t.shape)) if a != b}
        if widths is None or len(now) != len(t.shape) or changed & widths:
            bad.append(f"{t.name} ({t.kind}, role {t.role}): {list(t.shape)} -> {list(now)}")
            tensors.append(t)
            continue
        tensors.append(dataclasses.replace(t, shape=now))
    if bad:
        raise ValueError("these tensors changed a width dim (or paramlab does not know their width dims), so "
                         "their multipliers would change: " + "; ".join(bad) + ". Re-plan the model: "
                         "paramlab.unparameterize(model), then paramlab.parameterize(model, ..., reinit=False)")
    new = dataclasses.replace(plan, tensors=tuple(tensors))
    check(model, new)
    return new


def check(model: nn.Module, plan) -> None:
    """Raise ValueError naming every planned use that changed since `plan` was made (see `problems`)."""
    found = problems(model, plan)
    if found:
        raise ValueError(message(found))


def message(found: list[str]) -> str:
    return ("this model changed after paramlab.parameterize, so the plan no longer describes it:\n  - "
            + "\n  - ".join(found[:8]) + ("\n  ..." if len(found) > 8 else "")
            + "\nA new layer would train without its scheme (no forward multiplier: a muP readout 1/m too large; "
            "PyTorch's default init; the old plan's learning rates), and a resized tensor's plan (shape, width "
            "multiplier, init) is stale. Change the model before calling "
            "paramlab.parameterize, or re-plan it: paramlab.unparameterize(model), then paramlab.parameterize(model, "
            "scheme, base=<the base model with the same change>, reinit=False) (reinit=False keeps every weight as "
            "it is now). Where only a tensor's number of outputs or vocabulary changed in place (not a width), "
            "paramlab.parameterize.replan_resized(model) takes the new shapes into the plan")


class Replaced:
    """Forward pre-hook of a layer put in a planned layer's place after parameterize: refuses to run."""

    def __init__(self, what: str):
        self.what = what

    def __call__(self, module, args):
        raise ValueError(message([self.what]))


class ReplacedChild(Replaced):
    """Forward pre-hook of a parent that reads a replaced child's tensors itself: refuses while the child
    there is not a planned one (putting the planned child back makes it pass again)."""

    def __init__(self, what: str, name: str):
        super().__init__(what)
        self.name = name

    def __call__(self, module, args):
        child = module._modules.get(self.name)
        if child is None or STAMP not in child.__dict__:
            super().__call__(module, args)


def remove(model: nn.Module) -> None:
    """Remove the stamps and the `Replaced` hooks (`paramlab.unparameterize`)."""
    for mod in model.modules():
        mod.__dict__.pop(STAMP, None)
        for k in [k for k, h in mod._forward_pre_hooks.items() if isinstance(h, Replaced)]:
            del mod._forward_pre_hooks[k]
