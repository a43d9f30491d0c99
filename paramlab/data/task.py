"""The task container every experiment uses, and the small helpers the task factories share.

Conventions
-----------
* regression:      ``y`` has shape ``(N, d_out)`` float32; ``n_classes`` is ``None``.
* classification:  ``y`` has shape ``(N,)`` int64 in ``0..n_classes-1``; ``d_out == n_classes``.
* ``x`` has shape ``(N, d_in)`` float32, or ``(N, 1, 8, 8)`` for ``digits(as_image=True)``
  (then ``d_in == 64``, the flattened size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

KINDS = ("regression", "classification")


# ----------------------------------------------------------------------------------------------
# Task container
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Task:
    """A train/test split plus what an experiment needs to build a model and pick a loss.

    The task does not prescribe a loss: regression targets suit MSE, classification labels suit
    cross-entropy (or MSE on one-hot targets via :meth:`targets`, as in kernel regression).

    Attributes:
        name:     task name, e.g. ``"multi_index"``.
        kind:     ``"regression"`` or ``"classification"``.
        x_train:  (n_train, d_in) float32 (or (n_train, 1, 8, 8) for image digits).
        y_train:  (n_train, d_out) float32 for regression; (n_train,) int64 for classification.
        x_test, y_test: same layout, n_test rows.
        d_in:     flattened input dimension.
        d_out:    output dimension a model needs (n_classes for classification).
        n_classes: number of classes, or ``None`` for regression.
        meta:     task-specific extras (teacher subspace ``U``, parity support, original classes...).
    """

    name: str
    kind: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    d_in: int
    d_out: int
    n_classes: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Task.kind must be one of {KINDS}, got {self.kind!r}")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not (torch.is_tensor(x) and torch.is_tensor(y)):
                raise TypeError(f"x_{split} and y_{split} must be torch tensors")
            if x.dtype != torch.float32:
                raise TypeError(f"x_{split} must be float32, got {x.dtype}")
            for name, t in ((f"x_{split}", x), (f"y_{split}", y)):
                if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{name} has {int((~torch.isfinite(t)).sum())} NaN/inf entries: clean the data "
                                     "(training on it would only report a divergence)")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}")
            if x.shape[0] and x[0].numel() != self.d_in:
                raise ValueError(f"x_{split} rows have {x[0].numel()} entries, expected d_in={self.d_in}")
            if self.kind == "classification":
                if y.dtype != torch.int64 or y.dim() != 1:
                    raise TypeError(f"classification y_{split} must be 1-d int64, got {y.dtype} {tuple(y.shape)}")
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= (self.n_classes or 0)):
                    raise ValueError(f"y_{split} labels outside 0..{(self.n_classes or 0) - 1}")
            else:
                if y.dtype != torch.float32 or y.dim() != 2 or y.shape[1] != self.d_out:
                    raise TypeError(
                        f"regression y_{split} must be float32 of shape (N, {self.d_out}), "
                        f"got {y.dtype} {tuple(y.shape)}"
                    )
        if self.kind == "classification" and self.d_out != self.n_classes:
            raise ValueError(f"classification needs d_out == n_classes, got {self.d_out} != {self.n_classes}")
        if self.kind == "regression" and self.n_classes is not None:
            raise ValueError("regression tasks have n_classes=None")

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(40,)`` or ``(1, 8, 8)``."""
        return tuple(self.x_train.shape[1:])

    # -- helpers -------------------------------------------------------------------------------
    def probe(self, n: int = 256, split: str = "test", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch ``(x, y)`` for measurements (features, kernels, CKA) at init and later.

        The same ``(n, split, seed)`` always gives the same rows; ``n`` larger than the split gives
        the whole split. Rows are a seeded random subset (not the first rows), in a fixed order.
        """
        if n <= 0:
            raise ValueError(f"probe size n must be positive, got {n}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        N = x.shape[0]
        if n >= N:
            return x, y
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(N, generator=g)[:n]  # (n,)
        return x[idx], y[idx]

    def targets(self, split: str = "train") -> torch.Tensor:
        """Float targets of shape (N, d_out): regression ``y`` as is; one-hot for classification.

        For losses that want real-valued targets (MSE, kernel regression) on any task.
        """
        y = getattr(self, f"y_{split}")
        if self.kind == "regression":
            return y
        return torch.nn.functional.one_hot(y, self.n_classes).to(torch.float32)

    def to(self, device: torch.device | str) -> "Task":
        """A copy with all four tensors on ``device`` (meta tensors are left where they are)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def replace(self, **changes: Any) -> "Task":
        """``dataclasses.replace`` (the task is frozen)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """A small JSON-able summary for run configs/logs (no tensors)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "d_in": self.d_in,
            "d_out": self.d_out,
            "n_classes": self.n_classes,
            "input_shape": list(self.input_shape),
        }
        for k, v in self.meta.items():
            if isinstance(v, (str, int, float, bool)) or v is None:
                out[k] = v
            elif isinstance(v, (list, tuple)) and all(isinstance(e, (str, int, float, bool)) for e in v):
                out[k] = list(v)
        return out

    def __repr__(self) -> str:
        return (
            f"Task({self.name!r}, {self.kind}, n_train={self.n_train}, n_test={self.n_test}, "
            f"input_shape={self.input_shape}, d_out={self.d_out}, n_classes={self.n_classes})"
        )


# ----------------------------------------------------------------------------------------------
# helpers shared by the task factories
# ----------------------------------------------------------------------------------------------


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """Independent numpy generator per (seed, stream): changing n_train never changes the test set."""
    return np.random.default_rng([int(seed), int(stream)])


def check_pos(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")


def as_f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def as_i64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def regression_task(name: str, x_tr, y_tr, x_te, y_te, meta: dict) -> Task:
    """A regression Task from numpy arrays: x (n, ...) inputs, y (n, d_out) float targets."""
    return Task(name, "regression", as_f32(x_tr), as_f32(y_tr), as_f32(x_te), as_f32(y_te),
                d_in=int(np.prod(x_tr.shape[1:])), d_out=int(y_tr.shape[1]), n_classes=None, meta=meta)


def classification_task(name: str, x_tr, y_tr, x_te, y_te, n_classes: int, meta: dict) -> Task:
    """A classification Task from numpy arrays: x (n, ...) inputs, y (n,) labels in 0..n_classes-1."""
    return Task(name, "classification", as_f32(x_tr), as_i64(y_tr), as_f32(x_te), as_i64(y_te),
                d_in=int(np.prod(x_tr.shape[1:])), d_out=n_classes, n_classes=n_classes, meta=meta)


def standardize_inputs(x_train: np.ndarray, x_test: np.ndarray, mode: str, stats_from: np.ndarray | None = None):
    """Affine-normalize inputs with statistics of ``stats_from`` (default: the training inputs).

    mode "feature": per coordinate mean 0 / std 1 (constant coordinates keep std 1, stay 0);
    "global": one mean and std over all coordinates; "none": unchanged.
    x_*: (N, D) float arrays.
    """
    if mode == "none":
        return x_train, x_test
    ref = x_train if stats_from is None else stats_from  # (M, D)
    if mode == "feature":
        mu = ref.mean(0, keepdims=True)  # (1, D)
        sd = ref.std(0, keepdims=True)  # (1, D)
        sd = np.where(sd < 1e-8, 1.0, sd)
    elif mode == "global":
        mu, sd = ref.mean(), ref.std()
        sd = sd if sd > 1e-8 else 1.0
    else:
        raise ValueError(f"standardize must be 'feature', 'global' or 'none', got {mode!r}")
    return (x_train - mu) / sd, (x_test - mu) / sd


def select_classes(x: np.ndarray, y: np.ndarray, classes: Sequence[int]):
    """Rows whose label is in ``classes``; labels remapped to their position in ``classes``."""
    classes = [int(c) for c in classes]
    lut = {c: i for i, c in enumerate(classes)}
    mask = np.isin(y, classes)
    y_new = np.array([lut[int(c)] for c in y[mask]], dtype=np.int64)
    return x[mask], y_new


def check_classes(classes: Sequence[int] | None, n_total: int, what: str = "classes") -> list[int]:
    if classes is None:
        return list(range(n_total))
    cl = [int(c) for c in classes]
    if not cl:
        raise ValueError(f"{what} must be non-empty")
    if len(set(cl)) != len(cl):
        raise ValueError(f"{what} has duplicates: {cl}")
    bad = [c for c in cl if not 0 <= c < n_total]
    if bad:
        raise ValueError(f"{what} {bad} outside 0..{n_total - 1}")
    return cl



def few_shot(task: Task, k_per_class: int, seed: int = 0) -> Task:
    """Keep exactly ``k_per_class`` training examples of every class (seeded choice, shuffled
    order); the test set is unchanged. ``meta["few_shot"]`` records k and the chosen train indices.

    Raises ValueError for regression tasks or when a class has fewer than ``k_per_class`` examples.
    """
    check_pos(k_per_class=k_per_class)
    if task.kind != "classification":
        raise ValueError(f"few_shot needs a classification task; {task.name!r} is {task.kind} (pass a smaller n_train)")
    y = task.y_train.cpu().numpy()  # (n_train,)
    counts = np.bincount(y, minlength=task.n_classes)
    short = {c: int(n) for c, n in enumerate(counts) if n < k_per_class}
    if short:
        raise ValueError(f"few_shot k_per_class={k_per_class} but these classes have fewer training examples: {short}")
    gen = seeded_rng(seed, 7)
    idx = np.concatenate(
        [gen.choice(np.flatnonzero(y == c), size=k_per_class, replace=False) for c in range(task.n_classes)]
    )
    idx = gen.permutation(idx)  # (n_classes * k_per_class,)
    t_idx = torch.from_numpy(idx).to(task.y_train.device)
    meta = dict(task.meta)
    meta["few_shot"] = {"k_per_class": k_per_class, "seed": seed, "indices": idx.tolist()}
    return dataclasses.replace(task, x_train=task.x_train[t_idx], y_train=task.y_train[t_idx], meta=meta)

