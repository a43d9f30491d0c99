"""Exact infinite-width limits that finite networks can be checked against.

`tp4_linear_limit`: the muP limit of a one-hidden-layer *linear* network with scalar input and
output trained by SGD (Yang & Hu 2021, "Tensor Programs IV", Thm 6.1 / Cor. 6.2; docs/theory.md §3.2).

The network and its normalization (TP4's muP = mean-field form for one hidden layer):

    f(xi) = V x,   x = h = U xi,     U in R^{n x 1},  V in R^{1 x n}
    U_i ~ N(0, 1),   n V_i ~ N(0, 1)                 (Z^{U_0}, Z^{nV_0} independent N(0, 1))
    SGD on L = loss(f(xi_t), y_t), chi_t = dL/df:     dU = -eta n chi_t xi_t V^T,  dV = -(eta / n) chi_t x^T

i.e. effective learning rates eta * n on U and eta / n on V. In the limit n -> infinity,
``Z^{nV_t} = A_t Z^{nV_0} + B_t Z^{U_0}`` and ``Z^{U_t} = C_t Z^{nV_0} + D_t Z^{U_0}`` with

    f_t(xi) = (A_t C_t + B_t D_t) xi
    (A, B) <- (A, B) - eta chi_t xi_t (C, D),   (C, D) <- (C, D) - eta chi_t xi_t (A, B)  (simultaneous)
    A_0 = D_0 = 1, B_0 = C_0 = 0.

The same network in paramlab: ``paramlab.mlp(1, 1, n, depth=1, activation='linear', bias=False,
scheme='mup', base_width=1, gain=1, readout_gain=1)`` trained with ``paramlab.optimizer(model, 'sgd',
lr=eta)`` on ``L = 0.5 (f - y)^2`` (batch 1). With base width 1 the width multiplier is m = n and
muP's form (TP5 Table 8) gives: U with std gain / sqrt(d) = 1, multiplier 1, SGD lr eta * m^1;
the readout trained tensor v ~ N(0, readout_gain^2 / n0) = N(0, 1), multiplier 1/m, lr eta * m, so
V = v / n has n V ~ N(0, 1) and its effective SGD step is (1/n)^2 * eta * n = eta / n. These are the
numbers above, so the finite net converges to this recursion, with error ~n^{-1/2} (f_0 itself is a
CLT fluctuation of size n^{-1/2}).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def tp4_linear_limit(xis: Sequence[float], ys: Sequence[float], eta: float, steps: int, xi_eval=None,
                     dloss: Callable[[float, float], float] | None = None) -> np.ndarray:
    """f_t of the infinite-width muP one-hidden-layer linear network, t = 0..steps (TP4 Cor. 6.2).

    Args:
        xis, ys: the training example (xi_t, y_t) of step t (scalars; at least ``steps`` of them).
        eta: the learning rate (TP4's muP normalization, see the module docstring).
        steps: number of SGD steps.
        xi_eval: inputs to evaluate f_t at (scalar or sequence). Default: the slope of f_t
            (f_t(xi) = slope_t * xi, i.e. xi_eval = 1).
        dloss: chi = dloss(f, y), the derivative of the loss in f. Default MSE 0.5 (f - y)^2: f - y.

    Returns:
        (steps + 1,) array of f_t(xi_eval) for a scalar xi_eval, else (steps + 1, len(xi_eval)).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if len(xis) < steps or len(ys) < steps:
        raise ValueError(f"need at least steps={steps} training examples, got {len(xis)} xis and {len(ys)} ys")
    dloss = dloss or (lambda f, y: f - y)
    a, b, c, d = 1.0, 0.0, 0.0, 1.0
    slopes = [a * c + b * d]
    for t in range(steps):
        xi, y = float(xis[t]), float(ys[t])
        chi = dloss(slopes[-1] * xi, y)
        k = eta * chi * xi
        a, b, c, d = a - k * c, b - k * d, c - k * a, d - k * b
        slopes.append(a * c + b * d)
    slopes = np.asarray(slopes)
    if xi_eval is None:
        return slopes
    xe = np.asarray(xi_eval, dtype=float)
    return slopes * xe if xe.ndim == 0 else slopes[:, None] * xe[None, :]
