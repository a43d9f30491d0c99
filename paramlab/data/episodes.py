"""Few-shot task B as a pool of labelled items and a list of seeded draws (episodes).

A transfer experiment trains a network on A once and then scores many few-shot draws of B on it:
the features of the whole pool are computed once per network (at init and after training), and an
episode is only index sets into the pool, so 50 draws cost 50 small ridge solves, not 50 forward
passes. Averaging over draws is what makes a few-point gap measurable: one draw of 5 shots per
class moves the probe accuracy by several points on its own.

    x             (P, ...) float32 inputs of the pool (signals, or word ids for text pairs)
    y             (P,) int64 labels in 0..n_classes-1 (the same for every episode), or
    episode_labels[e] (P,) int64 labels of episode e (pairs whose label depends on the draw)
    episodes[e]   (train_idx (n_shot,), test_idx (n_test,)) int64 index arrays, disjoint

`Episodes.task(e)` is episode e as a plain `Task`, so code written for one B runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .task import Task

__all__ = ["Episodes", "k_shot_episodes"]


@dataclass(frozen=True, eq=False)
class Episodes:
    """B as a pool and its few-shot draws (see the module docstring)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    episodes: list
    meta: dict[str, Any] = field(default_factory=dict)
    episode_labels: list | None = None

    def __post_init__(self):
        if not self.episodes:
            raise ValueError(f"{self.name!r}: no episodes (n_episodes must be >= 1)")
        if self.episode_labels is not None and len(self.episode_labels) != len(self.episodes):
            raise ValueError(f"{self.name!r}: {len(self.episode_labels)} label vectors for {len(self.episodes)} episodes")
        for e, (tr, te) in enumerate(self.episodes):
            if np.intersect1d(tr, te).size:
                raise ValueError(f"episode {e} of {self.name!r}: its shots and test items overlap")

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def d_in(self) -> int:
        return int(np.prod(self.x.shape[1:]))

    def labels(self, e: int) -> torch.Tensor:
        """(P,) int64 labels of the pool in episode e."""
        return self.y if self.episode_labels is None else torch.from_numpy(self.episode_labels[e])

    def task(self, e: int = 0) -> Task:
        """Episode `e` as a classification Task (train: its shots; test: its test items)."""
        if not 0 <= e < len(self):
            raise ValueError(f"episode {e} of {self.name!r}: there are {len(self)} (pass n_episodes > {e})")
        tr, te = (torch.from_numpy(i) for i in self.episodes[e])
        y = self.labels(e)
        meta = {**self.meta, "episode": e, "role": "B"}
        return Task(self.name, "classification", self.x[tr], y[tr], self.x[te], y[te], d_in=self.d_in,
                    d_out=self.n_classes, n_classes=self.n_classes, meta=meta)


def k_shot_episodes(y_pool: np.ndarray, test_idx: np.ndarray, k: int, n: int, seed: int) -> list:
    """n episodes: k shots per class drawn from the pool's non-test items; the same test items each time.

    Episode e draws from numpy generator [seed, e], so episode e is the same whatever n is.
    Raises if a class has fewer than k candidate shots.
    """
    if k < 1 or n < 1:
        raise ValueError(f"k (shots per class) and n (episodes) must be >= 1, got k={k}, n={n}")
    test_idx = np.asarray(test_idx, dtype=np.int64)
    cand = np.setdiff1d(np.arange(len(y_pool)), test_idx)
    classes = np.unique(y_pool[test_idx])
    short = {int(c): int((y_pool[cand] == c).sum()) for c in classes if (y_pool[cand] == c).sum() < k}
    if short:
        raise ValueError(f"k={k} shots per class, but these classes have fewer candidates: {short}")
    out = []
    for e in range(n):
        g = np.random.default_rng([seed, e])
        tr = np.concatenate([g.choice(cand[y_pool[cand] == c], size=k, replace=False) for c in classes])
        out.append((g.permutation(tr).astype(np.int64), test_idx))
    return out
