"""Transfer pairs: a pretraining task A and a related few-shot task B that share structure.

The same teacher subspace ``U`` with a different link ``g``, or disjoint classes of one dataset.
Episode pairs (`EPISODE_PAIRS`: `image_pairs`, `text_pairs`) give B as many few-shot draws from
one pool (`episodes.Episodes`); in `TRANSFER_PAIRS` they hand out one draw (``episode=e``) as a Task.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from .digits import digits_arrays, digits_task
from .episodes import Episodes
from .image_pairs import IMAGE_PAIRS
from .mnist1d import mnist1d_arrays
from .synthetic import multi_index
from .task import Task, check_classes, check_pos, classification_task, few_shot, select_classes, standardize_inputs
from .text_pairs import TEXT_PAIRS

def _split_classes_ab(classes_a, classes_b, n_total: int) -> tuple[list[int], list[int]]:
    a = check_classes(classes_a, n_total, "classes_a")
    b = check_classes(classes_b, n_total, "classes_b")
    common = sorted(set(a) & set(b))
    if common:
        raise ValueError(f"classes_a and classes_b must be disjoint; both contain {common}")
    return a, b


def _transfer_multi_index(
    n_train: int = 2048,
    n_test: int = 1024,
    n_train_b: int = 64,
    d: int = 32,
    k: int = 2,
    link_a: str | Callable = "tanh_prod",
    link_b: str | Callable = "quadratic",
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[Task, Task]:
    if isinstance(link_a, str) and isinstance(link_b, str) and link_a == link_b:
        raise ValueError(f"link_a and link_b must differ for a transfer pair, both are {link_a!r}")
    a = multi_index(n_train, n_test, d=d, k=k, link=link_a, noise=noise, seed=seed)
    # same U, fresh inputs (seed + 1) and a different link
    b = multi_index(n_train_b, n_test, link=link_b, noise=noise, seed=seed + 1, U=a.meta["U"])
    a = a.replace(meta={**a.meta, "role": "A", "pair_seed": seed})
    b = b.replace(meta={**b.meta, "role": "B", "pair_seed": seed})
    return a, b


def _transfer_classes(
    arrays_fn: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    build: Callable[..., Task],
    classes_a,
    classes_b,
    k_per_class: int,
    standardize: str,
    seed: int,
) -> tuple[Task, Task]:
    a_cl, b_cl = _split_classes_ab(classes_a, classes_b, 10)
    check_pos(k_per_class=k_per_class)
    x_tr, y_tr, x_te, y_te = arrays_fn()
    xa_tr, ya_tr = select_classes(x_tr, y_tr, a_cl)
    xa_te, ya_te = select_classes(x_te, y_te, a_cl)
    xb_tr, yb_tr = select_classes(x_tr, y_tr, b_cl)
    xb_te, yb_te = select_classes(x_te, y_te, b_cl)
    # Both tasks use task A's training statistics: B is preprocessed exactly like A (a net
    # pretrained on A sees B in the same input coordinates), and B's inputs are not peeked at.
    xa_tr_s, xa_te_s = standardize_inputs(xa_tr, xa_te, standardize)
    xb_tr_s, xb_te_s = standardize_inputs(xb_tr, xb_te, standardize, stats_from=xa_tr)
    a = build(xa_tr_s, ya_tr, xa_te_s, ya_te, a_cl, "A")
    b = build(xb_tr_s, yb_tr, xb_te_s, yb_te, b_cl, "B")
    return a, few_shot(b, k_per_class, seed=seed)


def _transfer_mnist1d(
    classes_a: Sequence[int] = (0, 1, 2, 3, 4),
    classes_b: Sequence[int] = (5, 6, 7, 8, 9),
    k_per_class: int = 5,
    seed: int = 0,
    standardize: str = "feature",
    num_samples: int = 5000,
    train_split: float = 0.8,
    data_seed: int = 42,
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    **gen_args: Any,
) -> tuple[Task, Task]:
    info: dict[str, Any] = {}

    def arrays():
        arr, inf = mnist1d_arrays(num_samples, train_split, data_seed, cache, use_cache, gen_args)
        info.update(inf)
        return arr["x"], arr["y"], arr["x_test"], arr["y_test"]

    def build(x_tr, y_tr, x_te, y_te, cl, role):
        meta = {
            "classes": cl,
            "role": role,
            "seed": data_seed,
            "pair_seed": seed,
            "standardize": standardize,
            "cache_path": info["cache_path"],
            "cache_hit": info["cache_hit"],
            "gen_args": info["gen_args"],
        }
        return classification_task("mnist1d", x_tr, y_tr, x_te, y_te, len(cl), meta)

    return _transfer_classes(arrays, build, classes_a, classes_b, k_per_class, standardize, seed)


def _transfer_digits(
    classes_a: Sequence[int] = (0, 1, 2, 3, 4),
    classes_b: Sequence[int] = (5, 6, 7, 8, 9),
    k_per_class: int = 5,
    seed: int = 0,
    standardize: str = "feature",
    test_size: float = 0.25,
    as_image: bool = False,
) -> tuple[Task, Task]:
    def arrays():
        return digits_arrays(test_size, seed)

    def build(x_tr, y_tr, x_te, y_te, cl, role):
        meta = {"classes": cl, "role": role, "seed": seed, "standardize": standardize, "as_image": as_image}
        return digits_task(x_tr, y_tr, x_te, y_te, as_image, meta)

    return _transfer_classes(arrays, build, classes_a, classes_b, k_per_class, standardize, seed)



TRANSFER_PAIRS: dict[str, Callable[..., tuple[Task, Task]]] = {
    "multi_index": _transfer_multi_index,
    "mnist1d": _transfer_mnist1d,
    "digits": _transfer_digits,
}

# name -> factory(k, n_episodes, seed, ...) -> (A Task, B Episodes)
EPISODE_PAIRS: dict[str, Callable[..., tuple[Task, Episodes]]] = {**IMAGE_PAIRS, **TEXT_PAIRS}


def transfer_episodes(name: str, **kwargs: Any) -> tuple[Task, Episodes]:
    """(A, B) of an episode pair: A to pretrain on, B every few-shot draw (`episodes.Episodes`).

    kwargs go to the pair's factory: k (shots per class), n_episodes, seed (of the draws), and the
    pair's own (vocab, window, max_train for the text pairs; n_a for mnist1d_compose).
    """
    if name not in EPISODE_PAIRS:
        raise ValueError(f"{name!r} is not an episode pair; known: {sorted(EPISODE_PAIRS)}")
    return EPISODE_PAIRS[name](**kwargs)


def _one_episode(name: str) -> Callable[..., tuple[Task, Task]]:
    def pair(episode: int = 0, **kwargs: Any) -> tuple[Task, Task]:
        kwargs.setdefault("n_episodes", episode + 1)
        a, b = transfer_episodes(name, **kwargs)
        return a, b.task(episode)

    pair.__doc__ = f"(A, B) of {name!r} with B = one few-shot draw (`episode`), as a Task."
    return pair


TRANSFER_PAIRS.update({name: _one_episode(name) for name in EPISODE_PAIRS})
