"""Analytic infinite-width NNGP and NTK kernels of fully connected networks, and the closed-form
infinite-width training dynamics (kernel regression, gradient flow on MSE).

Pure torch, float64 by default, no dependency on the rest of ``paramlab``.

Network
-------
``MLPKernel(depth=L, activation=phi, W_std=s_w, b_std=s_b)`` is the kernel of

    f(x) = Dense( phi( Dense( ... phi( Dense(x) ) ... ) ) )       (L hidden layers + linear readout)

i.e. neural-tangents' ``stax.serial(*[Dense(n, W_std, b_std), Phi()] * L, Dense(k, W_std, b_std))``
with ``parameterization='ntk'``:  every Dense is ``z = (s_w / sqrt(fan_in)) h W + s_b b`` with
``W_ij, b_i ~ N(0, 1)`` (no bias term at all if ``b_std is None``).  The kernels are per output
channel (outputs are iid across channels) and are the limits, as every hidden width goes to
infinity, of

    NNGP  K(x, x')     = E[f(x) f(x')]
    NTK   Theta(x, x') = sum_params  d f(x)/d p  *  d f(x')/d p

Recursion (Lee et al. 2018; Jacot et al. 2018; neural-tangents ``stax``)
-------------------------------------------------------------------------
With ``c = K(x, x')``, ``q = K(x, x)``, ``q' = K(x', x')``:

    input:  K <- x.x' / d,   Theta <- 0                           (d = number of input features)
    Dense:  K <- s_w^2 K + s_b^2,   Theta <- K_new + s_w^2 Theta   (s_b^2 term only if b_std given)
    phi:    K <- E[phi(u) phi(v)],  Theta <- Theta * E[phi'(u) phi'(v)],
            (u, v) ~ N(0, [[q, c], [c, q']])

The Gaussian expectations are closed forms:

* ``relu`` (arc-cosine kernels of degree 1 and 0, Cho & Saul 2009), with
  ``theta = arctan2(sqrt(q q' - c^2), c)`` (= arccos(c / sqrt(q q')), but well conditioned near 0
  and pi):

      E[relu(u) relu(v)]   = ( sqrt(q q' - c^2) + (pi - theta) c ) / (2 pi)
      E[relu'(u) relu'(v)] = (pi - theta) / (2 pi)

* ``erf`` (Williams 1997; neural-tangents ``stax.Erf``):

      E[erf(u) erf(v)]     = (2/pi) asin( 2c / sqrt((1 + 2q)(1 + 2q')) )
      E[erf'(u) erf'(v)]   = (4/pi) / sqrt( (1 + 2q)(1 + 2q') - 4c^2 )

* ``linear``: identity, ``E[u v] = c`` and ``E[1 * 1] = 1``.

Infinite-width training
-----------------------
``gd_mse_prediction`` is the gradient-flow solution of the linearized (= infinite-width) model on
``L(f) = ||f_train - y||^2 / (2 * y.size)``, in neural-tangents' ``predict.gradient_descent_mse``
convention (time measured in units of the learning rate); ``t = inf`` gives kernel regression,
``kernel_regression``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

__all__ = [
    "ACTIVATIONS",
    "Kernels",
    "GDPrediction",
    "MLPKernel",
    "nngp_ntk",
    "kernel_regression",
    "gd_mse_prediction",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "erf", "linear")

_TWO_PI = 2.0 * math.pi


class Kernels(NamedTuple):
    """Output of :meth:`MLPKernel.both`: the NNGP ``nngp`` and the NTK ``ntk``, same shape."""

    nngp: torch.Tensor
    ntk: torch.Tensor


class GDPrediction(NamedTuple):
    """Output of :func:`gd_mse_prediction`: predictions on the train and on the test inputs."""

    train: torch.Tensor
    test: torch.Tensor | None


# --------------------------------------------------------------------------------------------------
# Elementwise kernel maps. All take (c, q1, q2, theta) that broadcast against each other:
#   full matrix:  c (..., n1, n2), q1 (..., n1, 1), q2 (..., 1, n2)
#   diagonal:     c (..., n),      q1 (..., n),     q2 (..., n)
# and return (c_new, q1_new, q2_new, theta_new) with the same shapes.
# --------------------------------------------------------------------------------------------------


def _relu(c, q1, q2, theta):
    """ReLU = neural-tangents ``ABRelu(0, 1)``; arc-cosine kernels k_1, k_0 (Cho & Saul 2009)."""
    # sqrt(q q' - c^2) = sqrt(q q') sin(angle); clamp: Cauchy-Schwarz can fail by rounding.
    sin_part = torch.sqrt(torch.clamp(q1 * q2 - c * c, min=0.0))
    angle = torch.atan2(sin_part, c)  # in [0, pi]; atan2(0, 0) = 0 for a zero input
    frac = (math.pi - angle) / _TWO_PI  # E[relu'(u) relu'(v)] = P(u > 0, v > 0)
    c_new = sin_part / _TWO_PI + frac * c
    # On the diagonal angle = 0: E[relu(u)^2] = q / 2 exactly.
    return c_new, q1 / 2.0, q2 / 2.0, theta * frac


def _erf(c, q1, q2, theta):
    """erf (Williams 1997; neural-tangents ``Erf(a=1, b=1, c=0)``)."""
    a1 = 1.0 + 2.0 * q1
    a2 = 1.0 + 2.0 * q2
    ratio = torch.clamp(2.0 * c / torch.sqrt(a1 * a2), -1.0, 1.0)
    c_new = (2.0 / math.pi) * torch.asin(ratio)
    # E[erf' erf'] = (4/pi) det(I + 2 Sigma)^(-1/2); det >= 1 + 2q + 2q' >= 1, but clamp anyway.
    det = torch.clamp(a1 * a2 - 4.0 * c * c, min=1.0)
    dot = (4.0 / math.pi) / torch.sqrt(det)
    q1_new = (2.0 / math.pi) * torch.asin(2.0 * q1 / a1)
    q2_new = (2.0 / math.pi) * torch.asin(2.0 * q2 / a2)
    return c_new, q1_new, q2_new, theta * dot


def _linear(c, q1, q2, theta):
    """Identity activation: kernels unchanged."""
    return c, q1, q2, theta


_ACT_MAPS = {"relu": _relu, "erf": _erf, "linear": _linear}
assert tuple(_ACT_MAPS) == ACTIVATIONS


def _as_inputs(x: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (..., n, d) (a batch of n inputs with d features); "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has zero features (shape {tuple(x.shape)})")
    return x.to(dtype)


@dataclass(frozen=True)
class MLPKernel:
    """Infinite-width NNGP / NTK of an MLP with ``depth`` hidden layers and a linear readout.

    Args:
        depth: number of hidden layers L >= 0 (L + 1 Dense layers in total; ``depth=0`` is a
            linear model).
        activation: one of ``ACTIVATIONS`` = ("relu", "erf", "linear").
        W_std: weight multiplier s_w of every Dense layer (forward ``s_w / sqrt(fan_in) * h @ W``).
        b_std: bias multiplier s_b, or ``None`` for no bias.  (``0.0`` and ``None`` give the same
            kernels in the 'ntk' parameterization.)

    See the module docstring for the recursion and the closed forms.  Inputs ``x1`` of shape
    ``(..., n1, d)`` and ``x2`` of shape ``(..., n2, d)`` (leading dims broadcast) give kernels of
    shape ``(..., n1, n2)``; ``x2=None`` means ``x2 = x1``.  With ``diag=True`` only the aligned
    pairs ``K(x1[i], x2[i])`` are computed, shape ``(..., n)`` (``n1 == n2`` required).
    """

    depth: int = 1
    activation: str = "relu"
    W_std: float = 1.0
    b_std: float | None = None

    def __post_init__(self):
        if isinstance(self.depth, bool):
            raise ValueError(f"depth must be a non-negative int; got {self.depth!r}")
        try:
            object.__setattr__(self, "depth", operator.index(self.depth))  # numpy ints ok
        except TypeError:
            raise ValueError(f"depth must be a non-negative int; got {self.depth!r}") from None
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0 (number of hidden layers); got {self.depth}")
        if self.activation not in _ACT_MAPS:
            raise ValueError(
                f"unknown activation {self.activation!r}; valid activations are "
                f"{', '.join(repr(a) for a in ACTIVATIONS)}"
            )
        if not math.isfinite(float(self.W_std)):
            raise ValueError(f"W_std must be finite; got {self.W_std!r}")
        if self.b_std is not None and not math.isfinite(float(self.b_std)):
            raise ValueError(f"b_std must be finite or None; got {self.b_std!r}")

    # ---------------------------------------------------------------------------------------------
    def both(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor | None = None,
        *,
        diag: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> Kernels:
        """NNGP and NTK at the readout, ``Kernels(nngp, ntk)``; shapes as in the class docstring."""
        x1 = _as_inputs(x1, "x1", dtype)  # (..., n1, d)
        same = x2 is None
        x2 = x1 if same else _as_inputs(x2, "x2", dtype)  # (..., n2, d)
        d = x1.shape[-1]
        if x2.shape[-1] != d:
            raise ValueError(
                f"x1 and x2 must have the same number of features (last dim); "
                f"got {x1.shape[-1]} and {x2.shape[-1]}"
            )
        if diag:
            if x1.shape[-2] != x2.shape[-2]:
                raise ValueError(
                    f"diag=True needs as many points in x1 as in x2; "
                    f"got {x1.shape[-2]} and {x2.shape[-2]}"
                )
            c = (x1 * x2).sum(-1) / d  # (..., n)
            q1 = (x1 * x1).sum(-1) / d  # (..., n)
            q2 = (x2 * x2).sum(-1) / d  # (..., n)
        elif same:
            c = x1 @ x1.transpose(-1, -2) / d  # (..., n, n)
            c = (c + c.transpose(-1, -2)) / 2  # exactly symmetric
            # q taken from c itself, so that q q' - c^2 = 0 exactly on the diagonal: the ReLU angle
            # arctan2(sqrt(q q' - c^2), c) would otherwise turn an O(eps) rounding mismatch into
            # an O(sqrt(eps)) error.  (Identical points passed in different x1, x2 keep that
            # O(sqrt(eps)) relative error, as in any arc-cosine implementation.)
            q1 = torch.diagonal(c, dim1=-2, dim2=-1).unsqueeze(-1)  # (..., n, 1)
            q2 = q1.transpose(-1, -2)  # (..., 1, n)
        else:
            c = x1 @ x2.transpose(-1, -2) / d  # (..., n1, n2)
            q1 = (x1 * x1).sum(-1, keepdim=True) / d  # (..., n1, 1)
            q2 = (x2 * x2).sum(-1).unsqueeze(-2) / d  # (..., 1, n2)
        theta = torch.zeros_like(c)  # Theta^0 = 0

        w2 = float(self.W_std) ** 2
        b2 = 0.0 if self.b_std is None else float(self.b_std) ** 2
        act = _ACT_MAPS[self.activation]

        def dense(c, q1, q2, theta):
            c, q1, q2 = w2 * c + b2, w2 * q1 + b2, w2 * q2 + b2
            return c, q1, q2, c + w2 * theta

        for _ in range(self.depth):
            c, q1, q2, theta = act(*dense(c, q1, q2, theta))
        c, q1, q2, theta = dense(c, q1, q2, theta)  # readout
        return Kernels(nngp=c, ntk=theta)

    def nngp(self, x1, x2=None, *, diag: bool = False, dtype: torch.dtype = torch.float64):
        """NNGP kernel ``K(x1, x2) = E[f(x1) f(x2)]`` at the readout."""
        return self.both(x1, x2, diag=diag, dtype=dtype).nngp

    def ntk(self, x1, x2=None, *, diag: bool = False, dtype: torch.dtype = torch.float64):
        """NTK ``Theta(x1, x2)`` at the readout (per output channel)."""
        return self.both(x1, x2, diag=diag, dtype=dtype).ntk


def nngp_ntk(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    depth: int = 1,
    activation: str = "relu",
    W_std: float = 1.0,
    b_std: float | None = None,
    diag: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Kernels:
    """Functional form of ``MLPKernel(depth, activation, W_std, b_std).both(x1, x2, diag=diag)``."""
    return MLPKernel(depth, activation, W_std, b_std).both(x1, x2, diag=diag, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Infinite-width training dynamics
# --------------------------------------------------------------------------------------------------


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
