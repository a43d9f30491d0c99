"""Tasks for the width-parameterization experiments (what each experiment shows: docs/experiments.md).

Every supervised task is a :class:`Task`: float32 inputs, a train/test split, and enough metadata
(``kind``, ``n_classes``, ``d_in``, ``d_out``, ``meta``) for an experiment to build a model and choose
its own loss. Language-model tasks are an :class:`LMTask`: a token stream split into train and
validation parts. Nothing here downloads anything, ever: synthetic tasks are sampled from seeded
numpy generators, mnist1d is *generated* locally (and cached as ``.npz``), digits is bundled with
scikit-learn, tiny Shakespeare ships inside paramlab (hash-checked).

One module per source: ``task`` (the container and shared helpers), ``synthetic`` (multi-index,
sparse parity), ``mnist1d``, ``digits``, ``text`` (tiny Shakespeare, any token stream) and
``transfer`` (pretraining / few-shot pairs). The registries below name them.

Tasks
-----
``multi_index``   ``y = g(U x)``, ``x ~ N(0, I_d)``, ``U`` (k x d) with orthonormal rows; regression.
``sparse_parity`` ``x ~ Unif{-1,+1}^d``, ``y = prod_{i in S} x_i`` with a secret ``|S| = k``.
``mnist1d``       Greydanus 2020 ("Scaling down deep learning", arXiv 2011.14439); 40-dim, 10 classes.
``digits``        scikit-learn ``load_digits`` (UCI optical digits, 8x8, 10 classes, 1797 images).
``shakespeare_char`` (``get_lm_task``) nanoGPT's character-level tiny Shakespeare, 65 characters.

Transfer pairs (:func:`transfer_pair`) share structure between a pretraining task A and a few-shot
task B: the same subspace ``U`` with a different link ``g``, or disjoint digit classes.
Episode pairs (:func:`transfer_episodes`; ``image_pairs``, ``text_pairs``, ``episodes``) give B as a
pool with many seeded few-shot draws: mnist1d_disjoint, mnist1d_compose, digits_disjoint,
shakespeare_w2v (CBOW on tiny Shakespeare's words -> word categories), shakespeare_plays.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .digits import digits
from .mnist1d import cache_dir, mnist1d
from .synthetic import LINKS, MultiIndexTeacher, multi_index, sparse_parity
from .task import Task, few_shot
from .text import LM_TASKS, LMTask, char_task, lm_task, shakespeare_char, shakespeare_text
from .transfer import EPISODE_PAIRS, TRANSFER_PAIRS, transfer_episodes

__all__ = [
    "Task",
    "LMTask",
    "MultiIndexTeacher",
    "multi_index",
    "sparse_parity",
    "mnist1d",
    "digits",
    "few_shot",
    "transfer_pair",
    "get_task",
    "get_lm_task",
    "lm_task",
    "char_task",
    "shakespeare_char",
    "shakespeare_text",
    "TASKS",
    "LM_TASKS",
    "TRANSFER_PAIRS",
    "EPISODE_PAIRS",
    "transfer_episodes",
    "LINKS",
    "cache_dir",
]

TASKS: dict[str, Callable[..., Task]] = {
    "multi_index": multi_index,
    "sparse_parity": sparse_parity,
    "mnist1d": mnist1d,
    "digits": digits,
}


def _lookup(registry: Mapping[str, Callable], name: str, what: str) -> Callable:
    if not isinstance(name, str):
        raise ValueError(f"{what} name must be a string, got {name!r}; known: {sorted(registry)}")
    key = name.strip().lower().replace("-", "_")
    if key not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {sorted(registry)}")
    return registry[key]


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name (``multi_index``, ``sparse_parity``, ``mnist1d``, ``digits``);
    ``kwargs`` go to the factory. Names are case-insensitive, ``-`` and ``_`` are the same."""
    return _lookup(TASKS, name, "task")(**kwargs)


def get_lm_task(name: str, **kwargs: Any) -> LMTask:
    """Build a language-model task by name (``shakespeare_char``); ``kwargs`` go to the factory."""
    return _lookup(LM_TASKS, name, "language-model task")(**kwargs)


def transfer_pair(name: str, **kwargs: Any) -> tuple[Task, Task]:
    """A pretraining task A and a related few-shot task B.

    ``"multi_index"``: A and B share the teacher subspace ``U``, B has a different link.
        kwargs: n_train=2048, n_test=1024, n_train_b=64, d=32, k=2, link_a="tanh_prod",
        link_b="quadratic", noise=0.0, seed=0 (B's inputs use seed + 1).
    ``"mnist1d"`` / ``"digits"``: disjoint classes. A: all training data of ``classes_a``
        (default 0-4); B: ``k_per_class`` (default 5) training examples of each of ``classes_b``
        (default 5-9) and their full test set. Labels of each task are remapped to ``0..n-1`` in the
        given class order (``meta["classes"]`` keeps the originals). Both are standardized with A's
        training statistics. kwargs: classes_a, classes_b, k_per_class, seed, standardize, plus
        num_samples/train_split/data_seed/cache/use_cache/**gen_args (mnist1d) or
        test_size/as_image (digits).
    """
    return _lookup(TRANSFER_PAIRS, name, "transfer pair")(**kwargs)
