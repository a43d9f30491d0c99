"""Mixed precision: forward passes under torch.autocast, weights and optimizer state in full precision.

`precision` / `autocast` arguments accept None, 'fp32' or 'float32' (off), 'bf16' or 'bfloat16'
(torch.bfloat16, any device), 'fp16' or 'float16' (torch.float16, CUDA).
"""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(autocast) -> torch.dtype | None:
    """The autocast dtype an argument names (None: no autocast)."""
    if autocast in (None, False, "none", "fp32", "float32"):
        return None
    if autocast in ("bf16", "bfloat16", torch.bfloat16, True):
        return torch.bfloat16
    if autocast in ("fp16", "float16", torch.float16):
        return torch.float16
    raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")


def autocast_context(device: torch.device | str, dtype: torch.dtype | None):
    """torch.autocast on `device`'s type with `dtype`, or a no-op context for dtype None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
