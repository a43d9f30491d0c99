"""Shared builder logic: make the model at its width, and the same architecture at the base width
and at a second width on the meta device (free), so that `parameterize` sees which dims are widths
(mup's base/delta rule) and can check them against the builder's own role tags."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..parameterize import get_plan, parameterize
from ..plan_options import PlanOptions

# every builder's default base width: width == BASE_WIDTH is the SP network all schemes share
BASE_WIDTH = 64


def check_width(name: str, value) -> int:
    """A width must be a positive int (a width below the base width is legal: m < 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _make_uninitialized(make: Callable[..., nn.Module], width: int, device) -> nn.Module:
    """The model at `width` without PyTorch's default init (parameterize draws every tensor anyway).

    Built on the meta device and given empty storage on `device`: this skips the kaiming-uniform
    draws of every layer, which cost as much as paramlab's own init. Models with buffers or shared
    parameters are built normally (empty buffers would be garbage; sharing must survive the move).
    """
    model = make(width, device="meta")
    shared = len(list(model.parameters())) != len(list(model.named_parameters(remove_duplicate=False)))
    if shared or any(True for _ in model.buffers()):
        return make(width, device=device)
    return model.to_empty(device=device or "cpu")


def build(make: Callable[..., nn.Module], width: int, base_width: int, scheme, *, options: PlanOptions,
          delta_width: int | None = None, device=None, seed: int | None = None,
          depth_rule: dict | None = None) -> nn.Module:
    """`make(width, device=None)` -> module with a `role_tags()` method; returns the parameterized model.

    options: the plan options (`paramlab.plan_options`), gain already resolved by the builder.
    device: where the model lives (the builder's own `device` argument). seed: of the init draws.
    delta_width: the second width that marks the width dims (default 2 * base_width + 1); builders
    whose architecture constrains the width (heads, norm groups) pass one it accepts.
    depth_rule: the depth keywords of `parameterize` (depth_scaling, base_depth, branches, depth), or None.
    If the module has an `apply_plan(plan)` method, it is called last, so that numbers the forward
    needs beyond paramlab's hooks (attention scale, a tied readout's multiplier) come from the plan.
    """
    check_width("width", width)
    check_width("base_width", base_width)
    delta_width = 2 * base_width + 1 if delta_width is None else check_width("delta_width", delta_width)
    if delta_width == base_width:
        raise ValueError(f"delta_width must differ from base_width ({base_width}) to mark the width dims")
    model = _make_uninitialized(make, width, device)
    base = make(base_width, device="meta")
    delta = make(delta_width, device="meta")  # any other width marks the width dims
    tags = model.role_tags() if hasattr(model, "role_tags") else None
    model = parameterize(model, scheme, base=base, delta=delta, roles=tags, seed=seed, **(depth_rule or {}),
                        **options.as_kwargs())
    if hasattr(model, "apply_plan"):
        model.apply_plan(get_plan(model))
    return model
