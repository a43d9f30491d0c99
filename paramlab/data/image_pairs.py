"""Image transfer pairs whose few-shot B is drawn many times (`Episodes`), on mnist1d and digits.

Each factory returns (A, B): A a classification `Task` to pretrain on, B an `Episodes` pool. Inputs
are standardized with A's training statistics only; no item of B (shots or test) is ever in A's
training set. Each design is fixed before any width/seed run, so no result chose it.

``mnist1d_disjoint``  A: mnist1d classes 0-4 (their ~2000 training signals).
                      B: classes 5-9; `k` shots per class from their training signals, tested on
                      their ~500 test signals. 5-way.
``mnist1d_compose``   A: all 10 classes on the first 3000 of the 4000 training signals.
                      B: compositions of A's classes: each episode draws a balanced bipartition S
                      of the 10 classes and asks "is the digit in S?"; `k` shots per original class
                      from the other 1000 training signals; test: the 1000 test signals. 2-way.
``digits_disjoint``   A: scikit-learn digits 0-4 (training split). B: digits 5-9, `k` shots per
                      class from their training split, tested on their test split. (Kept because it
                      is the image pair where the predicted gap did *not* show; docs/experiments.md.)

mnist1d is the canonical 5000-signal draw (4000 train / 1000 test, generator seed 42).
"""

from __future__ import annotations

import numpy as np
import torch

from .digits import digits_arrays
from .episodes import Episodes, k_shot_episodes
from .mnist1d import mnist1d_arrays
from .task import check_pos, classification_task, select_classes, standardize_inputs


def _mnist1d_raw():
    arr, _ = mnist1d_arrays(5000, 0.8, 42, None, True, {})  # the canonical 4000 / 1000 split
    return arr["x"], arr["y"], arr["x_test"], arr["y_test"]


def _disjoint(name, raw, classes_a, classes_b, k, n_episodes, seed):
    """A = classes_a (train split); B pool = classes_b train (shot candidates) + test (test items)."""
    check_pos(k=k, n_episodes=n_episodes)
    x_tr, y_tr, x_te, y_te = raw
    xa_tr, ya_tr = select_classes(x_tr, y_tr, classes_a)
    xa_te, ya_te = select_classes(x_te, y_te, classes_a)
    xb_tr, yb_tr = select_classes(x_tr, y_tr, classes_b)
    xb_te, yb_te = select_classes(x_te, y_te, classes_b)
    xa_tr_s, xa_te_s = standardize_inputs(xa_tr, xa_te, "feature")
    xb_tr_s, xb_te_s = standardize_inputs(xb_tr, xb_te, "feature", stats_from=xa_tr)
    A = classification_task(name, xa_tr_s, ya_tr, xa_te_s, ya_te, len(classes_a),
                            {"classes": list(classes_a), "role": "A"})
    x_pool = np.concatenate([xb_tr_s, xb_te_s])  # (P, d)
    y_pool = np.concatenate([yb_tr, yb_te])  # (P,)
    test_idx = np.arange(len(xb_tr_s), len(x_pool))
    eps = k_shot_episodes(y_pool, test_idx, k, n_episodes, seed)
    B = Episodes(name, torch.from_numpy(x_pool.astype(np.float32)), torch.from_numpy(y_pool), len(classes_b), eps,
                 {"classes": list(classes_b), "k_per_class": k, "chance": 1 / len(classes_b), "seed": seed})
    return A, B


def mnist1d_disjoint(k: int = 5, n_episodes: int = 50, seed: int = 0):
    """(A, B): mnist1d classes 0-4 -> k-shot classes 5-9 (module docstring)."""
    return _disjoint("mnist1d_disjoint", _mnist1d_raw(), (0, 1, 2, 3, 4), (5, 6, 7, 8, 9), k, n_episodes, seed)


def digits_disjoint(k: int = 5, n_episodes: int = 50, seed: int = 0, split_seed: int = 0):
    """(A, B): digits 0-4 -> k-shot digits 5-9 (module docstring)."""
    return _disjoint("digits_disjoint", digits_arrays(0.25, split_seed), (0, 1, 2, 3, 4), (5, 6, 7, 8, 9), k,
                     n_episodes, seed)


def mnist1d_compose(k: int = 5, n_episodes: int = 50, seed: int = 0, n_a: int = 3000):
    """(A, B): mnist1d 10-way on `n_a` signals -> "is the class in S" for a random balanced S per episode."""
    check_pos(k=k, n_episodes=n_episodes, n_a=n_a)
    x_tr, y_tr, x_te, y_te = _mnist1d_raw()
    if n_a >= len(x_tr):
        raise ValueError(f"n_a={n_a} leaves no B shots: mnist1d has {len(x_tr)} training signals")
    xa, ya = x_tr[:n_a], y_tr[:n_a]  # mnist1d's train split is already shuffled
    xb, yb = x_tr[n_a:], y_tr[n_a:]  # B's shots come from here, never seen by A
    xa_s, xte_s = standardize_inputs(xa, x_te, "feature")
    xb_s, _ = standardize_inputs(xb, x_te, "feature", stats_from=xa)
    A = classification_task("mnist1d_compose", xa_s, ya, xte_s, y_te, 10, {"classes": list(range(10)), "role": "A"})
    x_pool = np.concatenate([xb_s, xte_s])  # (P, 40) = (4000 - n_a + 1000, 40)
    c_pool = np.concatenate([yb, y_te])  # original class of every pool item
    test_idx = np.arange(len(xb_s), len(x_pool))
    eps = k_shot_episodes(c_pool, test_idx, k, n_episodes, seed)
    labels, subsets = [], []
    for e in range(n_episodes):  # one bipartition per episode: the label depends on the draw
        g = np.random.default_rng([seed, 10_000 + e])
        in_s = np.zeros(10, dtype=np.int64)
        in_s[g.choice(10, 5, replace=False)] = 1
        labels.append(in_s[c_pool])  # (P,)
        subsets.append(np.flatnonzero(in_s).tolist())
    B = Episodes("mnist1d_compose", torch.from_numpy(x_pool.astype(np.float32)), torch.from_numpy(c_pool), 2, eps,
                 {"classes": list(range(10)), "k_per_class": k, "shots_per": "original class", "chance": 0.5,
                  "subsets": subsets, "seed": seed}, episode_labels=labels)
    return A, B


IMAGE_PAIRS = {"mnist1d_disjoint": mnist1d_disjoint, "mnist1d_compose": mnist1d_compose,
               "digits_disjoint": digits_disjoint}
