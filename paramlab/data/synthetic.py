"""Synthetic teachers: multi-index regression and sparse parity.

``multi_index``   ``y = g(U x)``, ``x ~ N(0, I_d)``, ``U`` (k x d) with orthonormal rows; regression.
                  Multi-index teachers as in Damian, Lee & Soltanolkotabi 2022 ("Neural networks can
                  learn representations with gradient descent", arXiv 2206.15144).
``sparse_parity`` ``x ~ Unif{-1,+1}^d``, ``y = prod_{i in S} x_i`` with a secret ``|S| = k``.
                  Barak, Edelman, Goel, Kakade, Malach & Zhang 2022 ("Hidden progress in deep
                  learning: SGD learns parities near the computational limit", arXiv 2207.08799).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .task import KINDS, Task, as_f32, check_pos, classification_task, regression_task, seeded_rng

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
        return as_f32(y).to(x.device) if torch.is_tensor(x) else y


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
    check_pos(n_train=n_train, n_test=n_test)
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
        check_pos(d=d, k=k)
        if k > d:
            raise ValueError(f"k={k} teacher directions cannot exceed the input dimension d={d}")
        U_np = _random_orthonormal_rows(d, k, seeded_rng(seed, 0))  # (k, d)
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

    x_tr = seeded_rng(seed, 1).standard_normal((n_train, d))  # (n_train, d)
    x_te = seeded_rng(seed, 2).standard_normal((n_test, d))  # (n_test, d)
    y_tr = teacher(x_tr)  # (n_train, 1)
    y_te = teacher(x_te)  # (n_test, 1)
    if noise > 0:
        y_tr = y_tr + noise * seeded_rng(seed, 3).standard_normal(y_tr.shape)

    meta = {
        "U": as_f32(U_np),  # (k, d)
        "teacher": teacher,
        "link": link_name,
        "k": k,
        "noise": float(noise),
        "seed": seed,
    }
    return regression_task("multi_index", x_tr, y_tr, x_te, y_te, meta)


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
    check_pos(n_train=n_train, n_test=n_test, d=d, k=k)
    if k > d:
        raise ValueError(f"parity order k={k} cannot exceed the input dimension d={d}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    support = np.sort(seeded_rng(seed, 0).choice(d, size=k, replace=False))  # (k,)

    def sample(n: int, stream: int):
        x = seeded_rng(seed, stream).integers(0, 2, size=(n, d)) * 2 - 1  # (n, d) in {-1, +1}
        chi = np.prod(x[:, support], axis=1)  # (n,) in {-1, +1}
        return x.astype(np.float32), chi

    x_tr, chi_tr = sample(n_train, 1)
    x_te, chi_te = sample(n_test, 2)
    meta = {"support": support.tolist(), "k": k, "seed": seed, "chi_train": as_f32(chi_tr), "chi_test": as_f32(chi_te)}
    if kind == "classification":
        return classification_task("sparse_parity", x_tr, (1 - chi_tr) // 2, x_te, (1 - chi_te) // 2, 2, meta)
    return regression_task("sparse_parity", x_tr, chi_tr[:, None], x_te, chi_te[:, None], meta)
