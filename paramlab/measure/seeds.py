"""The seed trap: different seeds that build the same network.

Instruments that average over seeds (`coord_check`, `paramlab.lr_sweep`) call the user's builder after
``torch.manual_seed(seed)``. A builder that fixes its own seed (``pl.parameterize(..., seed=0)``,
``pl.mlp(..., seed=0)``, a ``torch.manual_seed(0)`` inside) then returns one and the same network for
every seed: the "seed spread" is zero and every interval is too narrow, with nothing looking wrong.
`fingerprint` / `same_network` detect it from the initial parameters; `warn_same_seeds` says how to fix it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["SeedWarning", "fingerprint", "same_network", "warn_same_seeds"]


class SeedWarning(UserWarning):
    """Two different seeds built the same network (bit-equal on every entry `fingerprint` samples): the builder
    ignores the seed it is given."""


# Entries kept per tensor: two seeds that draw the same numbers agree on all of them, two different draws
# differ on almost every one; a full copy would hold a second CPU copy of every parameter per width.
_SAMPLE = 256


def fingerprint(model: nn.Module) -> list[torch.Tensor]:
    """Up to `_SAMPLE` evenly spaced entries of each floating-point parameter (`named_parameters` order),
    copied to the CPU, to compare two inits."""
    out = []
    for p in model.parameters():
        if p.is_floating_point():
            flat = p.detach().reshape(-1)
            out.append(flat[:: max(1, flat.numel() // _SAMPLE)][:_SAMPLE].to("cpu", copy=True))
    return out


def same_network(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """True when two fingerprints are bit-identical and at least one tensor is not constant (a network
    whose every tensor is constant, e.g. all zeros, is identical for every seed by construction)."""
    if len(a) != len(b) or not a:
        return False
    if not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b)):
        return False
    return any(x.numel() > 1 and bool((x != x.flatten()[0]).any()) for x in a)


def warn_same_seeds(where: str, seeds: tuple, width: int, stacklevel: int = 3) -> None:
    """Warn (SeedWarning) that `seeds` built the same network at `width`, naming the fix."""
    warnings.warn(
        f"{where}: seeds {seeds[0]} and {seeds[1]} built identical networks at width {width}, so the seeds "
        "measure nothing (zero spread, intervals too narrow). The builder fixes its own seed: drop seed= from "
        "pl.parameterize / pl.mlp (or any torch.manual_seed inside it); paramlab calls it after "
        "torch.manual_seed(seed) for each seed", SeedWarning, stacklevel=stacklevel)
