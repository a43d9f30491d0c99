"""Live metrics: where a training loop sends each logged point *while it trains*.

A loop calls `emit(metrics, step, model=k)` at every point it records (k = the model's index in a
stack of K models; 0 for plain training). Whoever runs the loop decides where the points go by
wrapping the call in `sending_to(sinks)`, one sink per model: the sweep opens one wandb run per
config of a unit and passes their `log` methods, so a stacked unit of K models is K live runs.
Outside `sending_to`, `emit` does nothing: training code never needs to know whether anyone listens.

The local store is not written from here (it stays the record the plots are drawn from, written by
the sweep from the returned history); this is the live view only.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Mapping, Sequence

Sink = Callable[[Mapping[str, Any], int], None]  # sink(metrics, step): step = the optimizer step

_SINKS: ContextVar[tuple[Sink, ...]] = ContextVar("paramlab_live_sinks", default=())


@contextmanager
def sending_to(sinks: Sequence[Sink]) -> Iterator[None]:
    """Within this block, `emit(..., model=k)` calls `sinks[k]`."""
    token = _SINKS.set(tuple(sinks))
    try:
        yield
    finally:
        _SINKS.reset(token)


@contextmanager
def as_model(k: int) -> Iterator[None]:
    """Within this block, `emit(..., model=0)` calls the enclosing block's `sinks[k]` (and no other):
    a loop over K models that trains each with a one-model loop sends model k's points to sink k."""
    sinks = _SINKS.get()
    token = _SINKS.set((sinks[k],) if 0 <= k < len(sinks) else ())
    try:
        yield
    finally:
        _SINKS.reset(token)


def sink(model: int = 0) -> Sink | None:
    """The sink `emit(..., model=model)` calls now (None without one): for a caller that renames or
    re-steps a loop's points before sending them, while the loop itself runs inside `sending_to([])`."""
    sinks = _SINKS.get()
    return sinks[model] if 0 <= model < len(sinks) else None


def listening() -> bool:
    """True inside `sending_to` with at least one sink (a loop may skip building metrics otherwise)."""
    return bool(_SINKS.get())


def emit(metrics: Mapping[str, Any], step: int, model: int = 0) -> None:
    """Send one point of model `model`'s metrics at optimizer step `step` (no-op without a sink)."""
    sinks = _SINKS.get()
    if 0 <= model < len(sinks):
        sinks[model]({k: v for k, v in metrics.items() if k != "step"}, int(step))
