"""Tasks for the width-parameterization experiments (DESIGN.md section 3).

Every task is a :class:`Task`: float32 inputs, a train/test split, and enough metadata
(``kind``, ``n_classes``, ``d_in``, ``d_out``, ``meta``) for an experiment to build a model and choose
its own loss. Nothing here downloads anything, ever: synthetic tasks are sampled from seeded numpy
generators, mnist1d is *generated* locally (and cached as ``.npz``), digits is bundled with
scikit-learn.

Tasks
-----
``multi_index``   ``y = g(U x)``, ``x ~ N(0, I_d)``, ``U`` (k x d) with orthonormal rows; regression.
                  Multi-index teachers as in Damian, Lee & Soltanolkotabi 2022 ("Neural networks can
                  learn representations with gradient descent", arXiv 2206.15144).
``sparse_parity`` ``x ~ Unif{-1,+1}^d``, ``y = prod_{i in S} x_i`` with a secret ``|S| = k``.
                  Barak, Edelman, Goel, Kakade, Malach & Zhang 2022 ("Hidden progress in deep
                  learning: SGD learns parities near the computational limit", arXiv 2207.08799).
``mnist1d``       Greydanus 2020 ("Scaling down deep learning", arXiv 2011.14439); 40-dim, 10 classes.
``digits``        scikit-learn ``load_digits`` (UCI optical digits, 8x8, 10 classes, 1797 images).

Transfer pairs (:func:`transfer_pair`) share structure between a pretraining task A and a few-shot
task B: the same subspace ``U`` with a different link ``g``, or disjoint digit classes.

Conventions
-----------
* regression:      ``y`` has shape ``(N, d_out)`` float32; ``n_classes`` is ``None``.
* classification:  ``y`` has shape ``(N,)`` int64 in ``0..n_classes-1``; ``d_out == n_classes``.
* ``x`` has shape ``(N, d_in)`` float32, or ``(N, 1, 8, 8)`` for ``digits(as_image=True)``
  (then ``d_in == 64``, the flattened size).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "Task",
    "MultiIndexTeacher",
    "multi_index",
    "sparse_parity",
    "mnist1d",
    "digits",
    "few_shot",
    "transfer_pair",
    "get_task",
    "TASKS",
    "TRANSFER_PAIRS",
    "LINKS",
    "cache_dir",
]

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
# small utilities
# ----------------------------------------------------------------------------------------------


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent numpy generator per (seed, stream): changing n_train never changes the test set."""
    return np.random.default_rng([int(seed), int(stream)])


def _check_pos(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _i64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def _regression(name: str, x_tr, y_tr, x_te, y_te, meta: dict) -> Task:
    """A regression Task from numpy arrays: x (n, ...) inputs, y (n, d_out) float targets."""
    return Task(name, "regression", _f32(x_tr), _f32(y_tr), _f32(x_te), _f32(y_te),
                d_in=int(np.prod(x_tr.shape[1:])), d_out=int(y_tr.shape[1]), n_classes=None, meta=meta)


def _classification(name: str, x_tr, y_tr, x_te, y_te, n_classes: int, meta: dict) -> Task:
    """A classification Task from numpy arrays: x (n, ...) inputs, y (n,) labels in 0..n_classes-1."""
    return Task(name, "classification", _f32(x_tr), _i64(y_tr), _f32(x_te), _i64(y_te),
                d_in=int(np.prod(x_tr.shape[1:])), d_out=n_classes, n_classes=n_classes, meta=meta)


def _standardize(x_train: np.ndarray, x_test: np.ndarray, mode: str, stats_from: np.ndarray | None = None):
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


def _select_classes(x: np.ndarray, y: np.ndarray, classes: Sequence[int]):
    """Rows whose label is in ``classes``; labels remapped to their position in ``classes``."""
    classes = [int(c) for c in classes]
    lut = {c: i for i, c in enumerate(classes)}
    mask = np.isin(y, classes)
    y_new = np.array([lut[int(c)] for c in y[mask]], dtype=np.int64)
    return x[mask], y_new


def _check_classes(classes: Sequence[int] | None, n_total: int, what: str = "classes") -> list[int]:
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


# ----------------------------------------------------------------------------------------------
# multi-index teacher
# ----------------------------------------------------------------------------------------------

# Links g: (N, k) float64 array z = x U^T  ->  (N,) array. Each is centered and scaled to unit
# variance under z ~ N(0, I_k) (the law of U x when U has orthonormal rows), see _link_moments.
LINKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # g(z) = sum_i tanh(z_i); mostly linear (information exponent 1)
    "tanh_sum": lambda z: np.tanh(z).sum(1),
    # g(z) = prod_i tanh(z_i); needs every direction jointly (information exponent k)
    "tanh_prod": lambda z: np.prod(np.tanh(z), axis=1),
    # g(z) = prod_i z_i; "x1*x2" for k=2 (Hermite degree k)
    "prod": lambda z: np.prod(z, axis=1),
    # g(z) = sum_i z_i^2 - k; radial quadratic form in span(U) (information exponent 2)
    "quadratic": lambda z: (z**2).sum(1) - z.shape[1],
    # g(z) = relu(z_1); single-index, uses the first row of U only
    "relu": lambda z: np.maximum(z[:, 0], 0.0),
    # g(z) = z_1 + z_1 z_2 + ... + z_1...z_k; staircase (Abbe, Boix-Adsera, Misiakiewicz 2022)
    "staircase": lambda z: np.cumprod(z, axis=1).sum(1),
}

_MOMENT_SAMPLES = 1 << 18


def _link_moments(link: Callable[[np.ndarray], np.ndarray], k: int) -> tuple[float, float]:
    """Mean and std of g(z), z ~ N(0, I_k), by a fixed Monte Carlo sample (2^18 draws, seed 0).

    Independent of n_train/n_test and of the task seed, so train and test (and task A and B of a
    transfer pair) are standardized identically.
    """
    z = np.random.default_rng([0, 12345, k]).standard_normal((_MOMENT_SAMPLES, k))  # (M, k)
    g = np.asarray(link(z), dtype=np.float64)  # (M,)
    sd = float(g.std())
    if not np.isfinite(sd) or sd < 1e-12:
        raise ValueError("link g is (numerically) constant under z ~ N(0, I_k); cannot standardize")
    return float(g.mean()), sd


def _random_orthonormal_rows(d: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """U: (k, d) with orthonormal rows, Haar-distributed (QR of a Gaussian, signs fixed by R)."""
    A = rng.standard_normal((d, k))  # (d, k)
    Q, R = np.linalg.qr(A)  # Q: (d, k)
    Q = Q * np.sign(np.diag(R))[None, :]
    return Q.T.copy()  # (k, d)


@dataclass(frozen=True, eq=False)
class MultiIndexTeacher:
    """The clean multi-index teacher ``f(x) = (g(U x) - mean) / std`` as a picklable callable.

    ``task.meta["teacher"]`` of a multi-index task; use it for fresh samples (online SGD) or to
    check that targets depend on ``x`` only through ``U x``.
    """

    U: np.ndarray  # (k, d) float64 with orthonormal rows
    link: str | Callable[[np.ndarray], np.ndarray]  # a name in LINKS, or a callable (N, k) -> (N,)
    mean: float
    std: float

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """x: (N, d) -> (N, 1); a tensor in gives a float32 tensor out (same device)."""
        g = LINKS[self.link] if isinstance(self.link, str) else self.link
        xn = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
        z = xn @ self.U.T  # (N, k)
        y = ((np.asarray(g(z), dtype=np.float64) - self.mean) / self.std)[:, None]  # (N, 1)
        return _f32(y).to(x.device) if torch.is_tensor(x) else y


def multi_index(
    n_train: int,
    n_test: int,
    d: int | None = None,
    k: int | None = None,
    link: str | Callable[[np.ndarray], np.ndarray] = "tanh_prod",
    noise: float = 0.0,
    seed: int = 0,
    U: np.ndarray | torch.Tensor | None = None,
) -> Task:
    """Multi-index teacher regression, ``y = (g(U x) - m_g) / s_g + noise * eps``.

    ``x ~ N(0, I_d)``; ``U`` is k x d with orthonormal rows (Haar-random from ``seed``, or given), so
    ``z = U x ~ N(0, I_k)`` and ``y`` depends on ``x`` only through its projection on ``span(U)``.
    ``m_g, s_g`` are the mean/std of ``g(z)`` under ``z ~ N(0, I_k)`` (fixed Monte Carlo estimate),
    so clean targets have mean ~0 and variance ~1. ``eps ~ N(0, 1)`` is added to *training* targets
    only; test targets are the clean teacher, so test MSE is the excess risk.

    Teachers of this form: Damian, Lee & Soltanolkotabi 2022 (arXiv 2206.15144); with k << d a
    feature-learning net can find ``span(U)`` while a kernel (NTK/NNGP) cannot.

    Args:
        n_train, n_test: sample sizes (> 0).
        d: input dimension (default 32, or ``U.shape[1]``).
        k: number of teacher directions, 1 <= k <= d (default 2, or ``U.shape[0]``).
        link: a name in :data:`LINKS` (``tanh_sum``, ``tanh_prod``, ``prod``, ``quadratic``,
            ``relu``, ``staircase``) or a callable mapping (N, k) float64 -> (N,).
        noise: std of label noise on training targets (>= 0).
        seed: seeds U (when not given), the train and test inputs and the noise, each on its own
            stream.
        U: optional (k, d) teacher with orthonormal rows (e.g. ``other.meta["U"]`` for transfer).

    Returns:
        Task with x: (n, d) float32, y: (n, 1) float32; ``meta["U"]`` (k, d) float32 tensor,
        ``meta["teacher"]`` (:class:`MultiIndexTeacher`, the clean map x -> y), ``meta["link"]``, ``meta["k"]``, ``meta["noise"]``, ``meta["seed"]``.
    """
    _check_pos(n_train=n_train, n_test=n_test)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if U is not None:
        U_np = U.detach().cpu().double().numpy() if torch.is_tensor(U) else np.asarray(U, dtype=np.float64)
        if U_np.ndim != 2:
            raise ValueError(f"U must be a (k, d) matrix, got shape {U_np.shape}")
        if (k is not None and k != U_np.shape[0]) or (d is not None and d != U_np.shape[1]):
            raise ValueError(f"U has shape {U_np.shape} but k={k}, d={d} were passed; omit them or match U")
        k, d = U_np.shape
        if k > d:
            raise ValueError(f"U has k={k} rows > d={d} columns; rows cannot be orthonormal")
        gram = U_np @ U_np.T  # (k, k)
        if not np.allclose(gram, np.eye(k), atol=1e-4):
            dev = np.abs(gram - np.eye(k)).max()
            raise ValueError(f"U must have orthonormal rows (U U^T = I); max deviation {dev:.2e}")
    else:
        d = 32 if d is None else d
        k = 2 if k is None else k
        _check_pos(d=d, k=k)
        if k > d:
            raise ValueError(f"k={k} teacher directions cannot exceed the input dimension d={d}")
        U_np = _random_orthonormal_rows(d, k, _rng(seed, 0))  # (k, d)
    # the teacher uses exactly the float32 U stored in meta["U"] (so a transfer partner given that
    # U has the identical teacher subspace)
    U_np = U_np.astype(np.float32).astype(np.float64)

    if isinstance(link, str):
        if link not in LINKS:
            raise ValueError(f"unknown link {link!r}; known links: {sorted(LINKS)}")
        link_name, g = link, LINKS[link]
    elif callable(link):
        link_name, g = getattr(link, "__name__", "custom"), link
    else:
        raise ValueError(f"link must be a name in {sorted(LINKS)} or a callable, got {link!r}")
    m_g, s_g = _link_moments(g, k)
    teacher = MultiIndexTeacher(U_np, link if isinstance(link, str) else g, m_g, s_g)

    x_tr = _rng(seed, 1).standard_normal((n_train, d))  # (n_train, d)
    x_te = _rng(seed, 2).standard_normal((n_test, d))  # (n_test, d)
    y_tr = teacher(x_tr)  # (n_train, 1)
    y_te = teacher(x_te)  # (n_test, 1)
    if noise > 0:
        y_tr = y_tr + noise * _rng(seed, 3).standard_normal(y_tr.shape)

    meta = {
        "U": _f32(U_np),  # (k, d)
        "teacher": teacher,
        "link": link_name,
        "k": k,
        "noise": float(noise),
        "seed": seed,
    }
    return _regression("multi_index", x_tr, y_tr, x_te, y_te, meta)


# ----------------------------------------------------------------------------------------------
# sparse parity
# ----------------------------------------------------------------------------------------------


def sparse_parity(
    n_train: int,
    n_test: int,
    d: int = 20,
    k: int = 3,
    seed: int = 0,
    kind: str = "classification",
) -> Task:
    """(d, k)-sparse parity: ``x ~ Unif{-1,+1}^d``, ``chi(x) = prod_{i in S} x_i`` for a secret
    support ``S`` (k distinct coordinates, drawn from ``seed``).

    Barak et al. 2022 (arXiv 2207.08799): SGD on neural nets learns it with ~d^k compute, and no
    single-coordinate statistic carries signal; kernels need ~d^k samples.

    ``kind="classification"`` (default): 2 classes, label ``(1 - chi) / 2`` in {0, 1} (int64), i.e.
    class 1 iff an odd number of the secret coordinates are -1.
    ``kind="regression"``: target ``chi`` in {-1, +1}, shape (N, 1) float32 (for MSE / kernel
    regression). Either way ``meta["chi_train"]``/``meta["chi_test"]`` hold the +-1 values.

    Returns:
        Task with x: (n, d) float32 in {-1, +1}; ``meta["support"]`` = sorted S (list of int).
    """
    _check_pos(n_train=n_train, n_test=n_test, d=d, k=k)
    if k > d:
        raise ValueError(f"parity order k={k} cannot exceed the input dimension d={d}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    support = np.sort(_rng(seed, 0).choice(d, size=k, replace=False))  # (k,)

    def sample(n: int, stream: int):
        x = _rng(seed, stream).integers(0, 2, size=(n, d)) * 2 - 1  # (n, d) in {-1, +1}
        chi = np.prod(x[:, support], axis=1)  # (n,) in {-1, +1}
        return x.astype(np.float32), chi

    x_tr, chi_tr = sample(n_train, 1)
    x_te, chi_te = sample(n_test, 2)
    meta = {"support": support.tolist(), "k": k, "seed": seed, "chi_train": _f32(chi_tr), "chi_test": _f32(chi_te)}
    if kind == "classification":
        return _classification("sparse_parity", x_tr, (1 - chi_tr) // 2, x_te, (1 - chi_te) // 2, 2, meta)
    return _regression("sparse_parity", x_tr, chi_tr[:, None], x_te, chi_te[:, None], meta)


# ----------------------------------------------------------------------------------------------
# mnist1d (generated locally, cached)
# ----------------------------------------------------------------------------------------------

_MNIST1D_CACHE_FORMAT = 1


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The data cache directory: ``path`` if given, else ``$PARAMLAB_CACHE``, else
    ``~/.cache/paramlab``. Not created here."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("PARAMLAB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "paramlab"


def _mnist1d_version() -> str:
    try:
        from importlib.metadata import version

        return version("mnist1d")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def _mnist1d_args(num_samples: int, train_split: float, seed: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The generation arguments: mnist1d defaults updated with ours; the download url removed."""
    from mnist1d.data import get_dataset_args

    args = dict(get_dataset_args(as_dict=True))
    unknown = sorted(set(overrides) - set(args) - {"url"})
    if unknown:
        raise ValueError(f"unknown mnist1d generation args {unknown}; known: {sorted(set(args) - {'url'})}")
    args.update(overrides)
    args.update(num_samples=int(num_samples), train_split=float(train_split), seed=int(seed))
    args.pop("url", None)
    return args


def _cache_key(args: Mapping[str, Any]) -> str:
    blob = json.dumps(
        {"args": dict(args), "mnist1d": _mnist1d_version(), "format": _MNIST1D_CACHE_FORMAT},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz via a temp file in the same directory and ``os.replace`` (atomic on POSIX):
    readers see either no file or a complete one, and concurrent writers cannot interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _generate_mnist1d(args: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` (never ``get_dataset``, which downloads).

    make_dataset calls ``random.seed``/``np.random.seed``: the global RNG states are restored after.
    """
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        ds = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.asarray(ds["x"], dtype=np.float32),  # (n_train, 40)
        "y": np.asarray(ds["y"], dtype=np.int64),  # (n_train,)
        "x_test": np.asarray(ds["x_test"], dtype=np.float32),  # (n_test, 40)
        "y_test": np.asarray(ds["y_test"], dtype=np.int64),  # (n_test,)
    }


def _mnist1d_arrays(
    num_samples: int,
    train_split: float,
    seed: int,
    cache: str | os.PathLike | None,
    use_cache: bool,
    overrides: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Raw mnist1d arrays, from the cache when present; returns (arrays, info)."""
    _check_pos(num_samples=num_samples)
    if num_samples < 10:
        raise ValueError(f"mnist1d needs num_samples >= 10 (one per class), got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    n_kept = (num_samples // 10) * 10
    n_tr = int(n_kept * train_split)
    if n_tr == 0 or n_tr == n_kept:
        raise ValueError(f"num_samples={num_samples}, train_split={train_split} leaves an empty train or test split")
    args = _mnist1d_args(num_samples, train_split, seed, overrides)
    key = _cache_key(args)
    path = cache_dir(cache) / f"mnist1d_{key}.npz"
    info: dict[str, Any] = {"cache_path": str(path), "cache_hit": False, "gen_args": args}
    names = ("x", "y", "x_test", "y_test")
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {n: z[n] for n in names}
            info["cache_hit"] = True
            return arrays, info
        except Exception as e:  # corrupt/foreign file: regenerate and overwrite
            warnings.warn(f"ignoring unreadable mnist1d cache {path}: {e}")
    arrays = _generate_mnist1d(args)
    if use_cache:
        try:
            _atomic_savez(path, **arrays, args_json=np.array(json.dumps(args, sort_keys=True, default=str)))
        except OSError as e:
            warnings.warn(f"could not write mnist1d cache {path}: {e}")
    return arrays, info


def mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    seed: int = 42,
    classes: Sequence[int] | None = None,
    standardize: str = "feature",
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    **gen_args: Any,
) -> Task:
    """MNIST-1D (Greydanus 2020, arXiv 2011.14439): 1-d signals of length 40, 10 classes.

    Generated locally by ``mnist1d.data.make_dataset(get_dataset_args())`` with ``num_samples``,
    ``train_split`` and ``seed`` (default 42, the canonical dataset: 4000 train / 1000 test) and any
    other generation arg in ``gen_args`` (e.g. ``shuffle_seq=True``, ``iid_noise_scale=0.05``).
    ``get_dataset`` (which downloads) is never used. make_dataset keeps ``num_samples // 10`` per
    class and splits after a seeded shuffle, so class counts are only roughly balanced.

    The generated arrays are cached as ``<cache>/mnist1d_<hash>.npz`` keyed by the generation args
    and the mnist1d version (cache dir: ``cache`` argument, else ``$PARAMLAB_CACHE``, else
    ``~/.cache/paramlab``), written atomically (temp file + ``os.replace``).

    Args:
        classes: keep only these classes; labels are remapped to ``0..len(classes)-1`` in the given
            order (``meta["classes"]`` keeps the originals).
        standardize: "feature" (per-coordinate, train statistics; default), "global" or "none"
            (make_dataset already centers and scales all signals by one global mean/std).

    Returns:
        classification Task, x: (n, 40) float32, y: (n,) int64.
    """
    cl = _check_classes(classes, 10)
    arrays, info = _mnist1d_arrays(num_samples, train_split, seed, cache, use_cache, gen_args)
    x_tr, y_tr = _select_classes(arrays["x"], arrays["y"], cl)
    x_te, y_te = _select_classes(arrays["x_test"], arrays["y_test"], cl)
    x_tr, x_te = _standardize(x_tr, x_te, standardize)
    meta = {"classes": cl, "seed": seed, "standardize": standardize, "cache_path": info["cache_path"],
            "cache_hit": info["cache_hit"], "gen_args": info["gen_args"]}
    return _classification("mnist1d", x_tr, y_tr, x_te, y_te, len(cl), meta)


# ----------------------------------------------------------------------------------------------
# scikit-learn digits (bundled)
# ----------------------------------------------------------------------------------------------


def _digits_arrays(test_size: float, seed: int):
    """load_digits (1797 x 64, pixel values 0..16), stratified seeded split."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)  # (1797, 64) float64, (1797,) int
    x_tr, x_te, y_tr, y_te = train_test_split(
        X / 16.0, y.astype(np.int64), test_size=test_size, random_state=seed, stratify=y
    )
    return x_tr, y_tr, x_te, y_te


def _digits_task(x_tr, y_tr, x_te, y_te, as_image, meta) -> Task:
    if as_image:
        x_tr = x_tr.reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
        x_te = x_te.reshape(-1, 1, 8, 8)
    return _classification("digits", x_tr, y_tr, x_te, y_te, len(meta["classes"]), meta)


def digits(
    test_size: float = 0.25,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    standardize: str = "feature",
    as_image: bool = False,
) -> Task:
    """scikit-learn's bundled ``load_digits`` (UCI optical recognition of handwritten digits):
    1797 8x8 images, 10 classes. No download.

    Pixels are scaled to [0, 1] (``/16``) and then standardized with training statistics
    (``standardize="feature"``: per pixel, constant pixels stay 0; "global"; or "none" for [0, 1]).
    The split is stratified and seeded (``test_size`` fraction to test).

    Returns:
        classification Task, x: (n, 64) float32, or (n, 1, 8, 8) with ``as_image=True``
        (``d_in`` is 64 either way); y: (n,) int64, remapped to ``0..len(classes)-1`` when
        ``classes`` is given.
    """
    cl = _check_classes(classes, 10)
    x_tr, y_tr, x_te, y_te = _digits_arrays(test_size, seed)
    x_tr, y_tr = _select_classes(x_tr, y_tr, cl)
    x_te, y_te = _select_classes(x_te, y_te, cl)
    x_tr, x_te = _standardize(x_tr, x_te, standardize)
    meta = {"classes": cl, "seed": seed, "standardize": standardize, "as_image": as_image}
    return _digits_task(x_tr, y_tr, x_te, y_te, as_image, meta)


# ----------------------------------------------------------------------------------------------
# few-shot and transfer pairs
# ----------------------------------------------------------------------------------------------


def few_shot(task: Task, k_per_class: int, seed: int = 0) -> Task:
    """Keep exactly ``k_per_class`` training examples of every class (seeded choice, shuffled
    order); the test set is unchanged. ``meta["few_shot"]`` records k and the chosen train indices.

    Raises ValueError for regression tasks or when a class has fewer than ``k_per_class`` examples.
    """
    _check_pos(k_per_class=k_per_class)
    if task.kind != "classification":
        raise ValueError(f"few_shot needs a classification task; {task.name!r} is {task.kind} (pass a smaller n_train)")
    y = task.y_train.cpu().numpy()  # (n_train,)
    counts = np.bincount(y, minlength=task.n_classes)
    short = {c: int(n) for c, n in enumerate(counts) if n < k_per_class}
    if short:
        raise ValueError(f"few_shot k_per_class={k_per_class} but these classes have fewer training examples: {short}")
    rng = _rng(seed, 7)
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), size=k_per_class, replace=False) for c in range(task.n_classes)]
    )
    idx = rng.permutation(idx)  # (n_classes * k_per_class,)
    t_idx = torch.from_numpy(idx).to(task.y_train.device)
    meta = dict(task.meta)
    meta["few_shot"] = {"k_per_class": k_per_class, "seed": seed, "indices": idx.tolist()}
    return dataclasses.replace(task, x_train=task.x_train[t_idx], y_train=task.y_train[t_idx], meta=meta)


def _split_classes_ab(classes_a, classes_b, n_total: int) -> tuple[list[int], list[int]]:
    a = _check_classes(classes_a, n_total, "classes_a")
    b = _check_classes(classes_b, n_total, "classes_b")
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
    _check_pos(k_per_class=k_per_class)
    x_tr, y_tr, x_te, y_te = arrays_fn()
    xa_tr, ya_tr = _select_classes(x_tr, y_tr, a_cl)
    xa_te, ya_te = _select_classes(x_te, y_te, a_cl)
    xb_tr, yb_tr = _select_classes(x_tr, y_tr, b_cl)
    xb_te, yb_te = _select_classes(x_te, y_te, b_cl)
    # Both tasks use task A's training statistics: B is preprocessed exactly like A (a net
    # pretrained on A sees B in the same input coordinates), and B's inputs are not peeked at.
    xa_tr_s, xa_te_s = _standardize(xa_tr, xa_te, standardize)
    xb_tr_s, xb_te_s = _standardize(xb_tr, xb_te, standardize, stats_from=xa_tr)
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
        arr, inf = _mnist1d_arrays(num_samples, train_split, data_seed, cache, use_cache, gen_args)
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
        return _classification("mnist1d", x_tr, y_tr, x_te, y_te, len(cl), meta)

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
        return _digits_arrays(test_size, seed)

    def build(x_tr, y_tr, x_te, y_te, cl, role):
        meta = {"classes": cl, "role": role, "seed": seed, "standardize": standardize, "as_image": as_image}
        return _digits_task(x_tr, y_tr, x_te, y_te, as_image, meta)

    return _transfer_classes(arrays, build, classes_a, classes_b, k_per_class, standardize, seed)


# ----------------------------------------------------------------------------------------------
# registries
# ----------------------------------------------------------------------------------------------

TASKS: dict[str, Callable[..., Task]] = {
    "multi_index": multi_index,
    "sparse_parity": sparse_parity,
    "mnist1d": mnist1d,
    "digits": digits,
}

TRANSFER_PAIRS: dict[str, Callable[..., tuple[Task, Task]]] = {
    "multi_index": _transfer_multi_index,
    "mnist1d": _transfer_mnist1d,
    "digits": _transfer_digits,
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
