"""The infinite-width model of a task: kernel regression and gradient flow on MSE with a fixed kernel.

``gd_mse_prediction`` is the gradient-flow solution of the linearized (= infinite-width) model on
``L(f) = ||f_train - y||^2 / (2 * y.size)``, in neural-tangents' ``predict.gradient_descent_mse``
convention (time measured in units of the learning rate); ``t = inf`` gives kernel regression,
``kernel_regression``.

The kernels come from `paramlab.measure.kernels` (analytic NNGP / NTK) or `paramlab.measure.ntk`
(empirical); float64 throughout.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch


class GDPrediction(NamedTuple):
    """Output of :func:`gd_mse_prediction`: predictions on the train and on the test inputs."""

    train: torch.Tensor
    test: torch.Tensor | None


def _check_regression_shapes(k_train_train, y_train, k_test_train):
    if k_train_train.ndim != 2 or k_train_train.shape[0] != k_train_train.shape[1]:
        raise ValueError(
            f"k_train_train must be a square (n_train, n_train) matrix; "
            f"got shape {tuple(k_train_train.shape)}"
        )
    n = k_train_train.shape[0]
    if y_train.ndim not in (1, 2) or y_train.shape[0] != n:
        raise ValueError(
            f"y_train must have shape (n_train,) or (n_train, k) with n_train = {n}; "
            f"got shape {tuple(y_train.shape)}"
        )
    if k_test_train is not None and (k_test_train.ndim != 2 or k_test_train.shape[1] != n):
        raise ValueError(
            f"k_test_train must have shape (n_test, n_train) with n_train = {n}; "
            f"got shape {tuple(k_test_train.shape)}"
        )


def _sym_eigh(k: torch.Tensor):
    """Eigendecomposition of the symmetric part of k, and the pinv-style cutoff for zero evals."""
    evals, evecs = torch.linalg.eigh((k + k.T) / 2)  # (n,), (n, n)
    n = k.shape[0]
    scale = evals.abs().max() if n else torch.zeros((), dtype=k.dtype)
    cutoff = n * torch.finfo(k.dtype).eps * scale
    return evals, evecs, cutoff


def kernel_regression(
    k_train_train: torch.Tensor,
    y_train: torch.Tensor,
    k_test_train: torch.Tensor,
    ridge: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Kernel (ridge) regression mean ``K_test,train (K_train,train + ridge I)^-1 y_train``.

    This is the infinite-width network trained to convergence by gradient flow on MSE from
    ``f_0 = 0`` (NNGP kernel: Bayesian posterior mean, Lee et al. 2018; NTK: Jacot et al. 2018,
    neural-tangents ``predict.gradient_descent_mse(..., t=None)``).

    Shapes: ``k_train_train (n, n)``, ``y_train (n,)`` or ``(n, k)``, ``k_test_train (m, n)``;
    returns ``(m,)`` or ``(m, k)``.  Solved by Cholesky in ``dtype``; if the (regularized) kernel
    is not numerically positive definite it falls back to the eigendecomposition pseudo-inverse.
    """
    k_tt = torch.as_tensor(k_train_train).to(dtype)  # (n, n)
    y = torch.as_tensor(y_train).to(dtype)  # (n,) or (n, k)
    k_st = torch.as_tensor(k_test_train).to(dtype)  # (m, n)
    _check_regression_shapes(k_tt, y, k_st)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0; got {ridge}")
    n = k_tt.shape[0]
    a = (k_tt + k_tt.T) / 2 + ridge * torch.eye(n, dtype=dtype)
    y2 = y.reshape(n, -1)  # (n, k)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        alpha = torch.cholesky_solve(y2, chol)  # (n, k)
    else:
        evals, evecs, cutoff = _sym_eigh(a)
        inv = torch.where(evals > cutoff, 1.0 / evals, torch.zeros_like(evals))
        alpha = evecs @ (inv[:, None] * (evecs.T @ y2))  # (n, k)
    out = k_st @ alpha  # (m, k)
    return out.reshape((k_st.shape[0],) + tuple(y.shape[1:]))


def gd_mse_prediction(
    k_train_train: torch.Tensor,
    y_train: torch.Tensor,
    k_test_train: torch.Tensor | None,
    t: float | Sequence[float] | torch.Tensor,
    lr: float = 1.0,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    ridge: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> GDPrediction:
    """Closed-form gradient flow of the infinite-width (linearized) model on MSE.

    Convention of neural-tangents ``predict.gradient_descent_mse(k_train_train, y_train,
    learning_rate=lr)``: the loss is ``L = ||f_train - y||^2 / (2 * y_train.size)`` and
    ``df/dt = -lr * K (f_train - y) / y_train.size``, so with ``K = V diag(lam) V^T``
    (``K = k_train_train + ridge I``, eigenvalues clamped at 0 as in neural-tangents) and
    ``s = lr * t / y_train.size``:

        f_t(train) = y + V diag(exp(-lam s)) V^T (f0_train - y)
        f_t(test)  = f0_test + k_test_train V diag(expm1(-lam s) / lam) V^T (f0_train - y)

    ``t = inf`` gives kernel regression (``-1 / lam``, zero eigenvalues dropped as in a
    pseudo-inverse) and ``t = 0`` gives ``f0``.  ``f0_*`` default to zero (the NTK mean predictor).

    Shapes: ``k_train_train (n, n)``, ``y_train (n,)`` or ``(n, k)``, ``k_test_train (m, n)`` or
    ``None``, ``f0_train`` like ``y_train``, ``f0_test (m,)`` / ``(m, k)``; ``t`` a scalar or a
    1-D sequence of T times.  Returns ``GDPrediction(train, test)`` with ``train`` of shape
    ``y_train.shape`` (or ``(T,) + y_train.shape`` for a sequence of times), ``test`` likewise
    with ``m`` rows, or ``None`` when ``k_test_train`` is ``None``.
    """
    k_tt = torch.as_tensor(k_train_train).to(dtype)  # (n, n)
    y = torch.as_tensor(y_train).to(dtype)  # (n,) or (n, k)
    k_st = None if k_test_train is None else torch.as_tensor(k_test_train).to(dtype)  # (m, n)
    _check_regression_shapes(k_tt, y, k_st)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0; got {ridge}")
    n = k_tt.shape[0]
    out_shape = tuple(y.shape[1:])  # () or (k,)

    f0_tr = torch.zeros_like(y) if f0_train is None else torch.as_tensor(f0_train).to(dtype)
    if f0_tr.shape != y.shape:
        raise ValueError(
            f"f0_train must have the shape of y_train {tuple(y.shape)}; got {tuple(f0_tr.shape)}"
        )
    f0_te = None
    if k_st is not None:
        m = k_st.shape[0]
        f0_te = (torch.zeros((m,) + out_shape, dtype=dtype) if f0_test is None
                 else torch.as_tensor(f0_test).to(dtype))
        if f0_te.shape != (m,) + out_shape:
            raise ValueError(
                f"f0_test must have shape {(m,) + out_shape}; got {tuple(f0_te.shape)}"
            )

    t_arr = torch.as_tensor(t, dtype=dtype)
    if t_arr.ndim > 1:
        raise ValueError(
            f"t must be a scalar or a 1-D sequence of times; got shape {tuple(t_arr.shape)}"
        )
    if torch.isnan(t_arr).any() or (t_arr < 0).any():
        raise ValueError("times t must be >= 0 (inf allowed)")
    ts = t_arr.reshape(-1)  # (T,)

    a = k_tt + ridge * torch.eye(n, dtype=dtype)
    evals, evecs, cutoff = _sym_eigh(a)  # (n,), (n, n)
    # As neural-tangents: negative eigenvalues (rounding, or a non-PSD "kernel") are clamped to 0,
    # and eigenvalues below the pseudo-inverse cutoff are treated as exact zeros.
    nonzero = evals > cutoff  # (n,)
    lam = torch.where(nonzero, evals, torch.zeros_like(evals))  # (n,)
    s = ts * (lr / y.numel())  # (T,) time in units of the normalized loss
    finite = torch.isfinite(s)[:, None]  # (T, 1)
    s_fin = torch.where(finite, s[:, None], torch.zeros_like(s[:, None]))  # (T, 1)

    # decay = exp(-lam s):  1 for lam = 0; 0 for s = inf and lam != 0.            (T, n)
    decay = torch.where(finite, torch.exp(-lam * s_fin),
                        torch.where(nonzero, torch.zeros_like(lam), torch.ones_like(lam)))
    # gain = -expm1(-lam s) / lam  (-> s as lam -> 0;  1/lam at s = inf, 0 on the null space)
    safe_lam = torch.where(nonzero, lam, torch.ones_like(lam))
    gain_fin = torch.where(nonzero, -torch.expm1(-lam * s_fin) / safe_lam, s_fin.expand(-1, n))
    gain_inf = torch.where(nonzero, 1.0 / safe_lam, torch.zeros_like(lam)).expand(len(ts), n)
    gain = torch.where(finite, gain_fin, gain_inf)  # (T, n)

    r0 = evecs.T @ (f0_tr - y).reshape(n, -1)  # (n, k) residual in the eigenbasis
    train = y.reshape(n, -1) + evecs @ (decay[:, :, None] * r0)  # (T, n, k)
    train = train.reshape((len(ts),) + tuple(y.shape))
    test = None
    if k_st is not None:
        m = k_st.shape[0]
        test = f0_te.reshape(m, -1) - k_st @ (evecs @ (gain[:, :, None] * r0))  # (T, m, k)
        test = test.reshape((len(ts), m) + out_shape)
    if t_arr.ndim == 0:
        train = train[0]
        test = None if test is None else test[0]
    return GDPrediction(train=train, test=test)
