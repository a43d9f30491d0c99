"""What "diverged" means, in one place: the engine's loop (`paramlab.engine.loop`) asks `diverged_reason`
for every training path (`paramlab.train`, stacked training, the LM, MAML's outer steps).

A run has diverged when its loss is not finite, or when it exceeds `DIVERGE_FACTOR` times the
initial train loss (the full-data train loss at step 0; where a loop records nothing at step 0, the LM
and MAML, the first step's loss). The second rule catches runs that blow up
without overflowing (Adam at a large lr ends at loss 1e6 and stays there: finite, but no result),
which a sweep would otherwise record as "finished" and feed into its slopes and optima.

The factor is generous on purpose: a minibatch loss may sit well above the full-data loss, and a
few-x overshoot early in training is ordinary. Pass ``diverge_factor=None`` to `train` to count
only non-finite losses.
"""

from __future__ import annotations

import math

__all__ = ["DIVERGE_FACTOR", "diverged_reason"]

# a loss above this many times the initial train loss counts as diverged
DIVERGE_FACTOR = 1e3


def diverged_reason(loss: float, initial: float | None, factor: float | None = DIVERGE_FACTOR) -> str | None:
    """None if `loss` is fine; else why the run diverged, e.g. ``"loss 1.7e+06 > 1e+03 x initial 0.9"``.

    `initial` is the train loss at step 0 (None or non-positive: only non-finite losses count).
    """
    loss = float(loss)
    if not math.isfinite(loss):
        return f"loss {loss}"
    if factor is not None and initial is not None and math.isfinite(initial) and initial > 0 \
            and loss > factor * initial:
        return f"loss {loss:.3g} > {factor:.3g} x initial {initial:.3g}"
    return None


def check_factor(factor) -> None:
    """Raise ValueError unless `factor` is None or a number > 1."""
    if factor is None:
        return
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1:
        raise ValueError(f"diverge_factor must be a number > 1 (or None: only non-finite losses diverge), got {factor!r}")
