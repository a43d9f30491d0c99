"""Analytic infinite-width NNGP and NTK kernels of fully connected networks.

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

Training in the limit (kernel regression, gradient flow on MSE): `paramlab.measure.kernel_regression`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = [
    "ACTIVATIONS",
    "Kernels",
    "MLPKernel",
    "nngp_ntk",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "erf", "linear")

_TWO_PI = 2.0 * math.pi


class Kernels(NamedTuple):
    """Output of :meth:`MLPKernel.both`: the NNGP ``nngp`` and the NTK ``ntk``, same shape."""

    nngp: torch.Tensor
    ntk: torch.Tensor


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
