"""Shared builder logic: make the model at its width, and the same architecture at the base width
and at a second width on the meta device (free), so that `parameterize` sees which dims are widths
(mup's base/delta rule) and can check them against the builder's own role tags."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..parameterize import parameterize


def check_width(name: str, value) -> int:
    """A width must be a positive int (a width below the base width is legal: m < 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def build(make: Callable[..., nn.Module], width: int, base_width: int, scheme, **parameterize_kwargs) -> nn.Module:
    """`make(width, device=None)` -> module with a `role_tags()` method; returns the parameterized model."""
    check_width("width", width)
    check_width("base_width", base_width)
    model = make(width)
    base = make(base_width, device="meta")
    delta = make(2 * base_width + 1, device="meta")  # any other width marks the width dims
    tags = model.role_tags() if hasattr(model, "role_tags") else None
    return parameterize(model, scheme, base=base, delta=delta, roles=tags, **parameterize_kwargs)
