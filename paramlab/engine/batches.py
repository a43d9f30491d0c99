"""Batch sources of the engine's loop: where each step's batch comes from, for a stack of K models.

Model k draws from a generator seeded with its own seed, so a stacked model sees exactly the batches its
one-by-one run sees; models sharing a seed share one generator (and one batch). `next(alive)` gives the
batch of the live models (their indices, in stack-row order) as a `Batch`: `per_model` is False when they
all share one batch x (B, ...), True when x is (K, B, ...), one batch per row.

    TensorBatches   minibatches of a (x, y) tensor pair, without replacement, reshuffled per epoch
    TokenWindows    random token windows of an LM task (`task.windows`), drawn fresh every step
    Episodes        a meta-batch of episodes per step (MAML: a list of support / query tensors)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass
class Batch:
    x: Any
    y: Any
    per_model: bool = False

    def rows(self, keep: Sequence[int]) -> "Batch":
        """The batch of the stack rows `keep` (after others were dropped)."""
        if not self.per_model:
            return self
        return Batch(self.x[list(keep)], self.y[list(keep)], True)


def _generators(seeds: Sequence[int]) -> tuple[dict, list[int]]:
    """One generator per distinct seed, and each model's seed."""
    seeds = [int(s) for s in seeds]
    return {s: torch.Generator().manual_seed(s) for s in sorted(set(seeds))}, seeds


class TensorBatches:
    """Minibatches of `batch_size` rows of (x, y) (None or >= len(x): the full batch every step).

    Each distinct seed has its own permutation, redrawn when the next batch would run past the end;
    all permutations advance together (one position), as K one-by-one runs of the same sizes do.
    `gen`, `perm`, `pos` of a one-seed source are the state a checkpoint keeps (`paramlab.checkpoint`).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None, seeds: Sequence[int]):
        self.x, self.y = x, y
        self.n = len(x)
        self.bs = self.n if batch_size is None else min(int(batch_size), self.n)
        self.gens, self.seeds = _generators(seeds)
        self.perms = {s: torch.randperm(self.n, generator=g) for s, g in self.gens.items()}
        self.pos = 0

    @property
    def full(self) -> bool:
        return self.bs == self.n

    # the state of a one-seed source (one model: checkpoints)
    @property
    def gen(self) -> torch.Generator:
        return self.gens[self.seeds[0]]

    @property
    def perm(self) -> torch.Tensor:
        return self.perms[self.seeds[0]]

    def restore(self, perm: torch.Tensor, pos: int) -> None:
        self.perms[self.seeds[0]], self.pos = perm, int(pos)

    def next(self, alive: Sequence[int]) -> Batch:
        if self.full:
            return Batch(self.x, self.y)
        if self.pos + self.bs > self.n:
            self.perms = {s: torch.randperm(self.n, generator=g) for s, g in self.gens.items()}
            self.pos = 0
        lo, hi = self.pos, self.pos + self.bs
        self.pos = hi
        seeds = [self.seeds[m] for m in alive]
        if len(set(seeds)) == 1:
            idx = self.perms[seeds[0]][lo:hi].to(self.x.device)
            return Batch(self.x[idx], self.y[idx])
        idx = torch.stack([self.perms[s][lo:hi] for s in seeds]).to(self.x.device)  # (K, bs)
        return Batch(self.x[idx], self.y[idx], True)


class TokenWindows:
    """`batch` windows of `context` tokens per step from `task.windows(..., "train", generator)`.

    Every seed's generator draws once per step, also when its models have dropped out: a seed's stream
    must not depend on which of its models are still alive. Shared windows: x, y (B, T); else (K, B, T).
    """

    def __init__(self, task, batch: int, context: int, seeds: Sequence[int]):
        self.task, self.batch, self.context = task, int(batch), int(context)
        self.gens, self.seeds = _generators(seeds)

    def next(self, alive: Sequence[int]) -> Batch:
        drawn = {s: self.task.windows(self.batch, self.context, "train", g) for s, g in self.gens.items()}
        seeds = [self.seeds[m] for m in alive]
        if len(set(seeds)) == 1:
            return Batch(*drawn[seeds[0]])
        return Batch(torch.stack([drawn[s][0] for s in seeds]), torch.stack([drawn[s][1] for s in seeds]), True)


class Episodes:
    """`size` consecutive items of `episodes` per step (a meta-batch), in order; `len()` full steps.
    `prepare(item)`, if given, turns each item into its tensors when its step comes."""

    def __init__(self, episodes: Sequence, size: int, prepare=None):
        self.episodes, self.size, self.t = list(episodes), int(size), 0
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.episodes) // self.size

    def next(self, alive: Sequence[int]) -> Batch:
        batch = self.episodes[self.t * self.size:(self.t + 1) * self.size]
        if self.prepare is not None:
            batch = [self.prepare(e) for e in batch]
        self.t += 1
        return Batch(batch, None)
