"""How far weights moved: spectral and Frobenius norms of W_t - W_0 relative to W_0, and the share of a
first-layer change that lies in a teacher's subspace.

* Weight movement ``||W_t - W_0|| / ||W_0||`` in spectral and Frobenius norms (on the 2-D view
  ``(fan_out, -1)``). Multipliers cancel in these ratios, so raw parameters are fine.
* For a multi-index teacher ``y = g(U x)`` (U: k x d with orthonormal rows) the fraction of a
  first-layer change ``dW`` (n x d) that lies in span(U): ``||dW U^T U||_F^2 / ||dW||_F^2``
  (1 for a change inside the span, ~k/d for a random one).
* `spectral_norm`: exact (SVD) for small matrices, Lanczos on W^T W above ``exact_max``, converged
  (default) or stopped after a fixed number of steps with a stated probabilistic error (``steps``).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def _view2d(w: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(w).detach()
    if w.dim() == 0:
        return w.reshape(1, 1)
    if w.dim() == 1:
        return w[:, None]
    return w.reshape(w.shape[0], -1)


def _lanczos_top(matvec, n: int, dtype, device, rtol: float, max_iter: int, seed: int = 0) -> float:
    """Largest eigenvalue of a PSD operator by Lanczos with full reorthogonalization."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(n, generator=g, dtype=dtype).to(device)
    v = v / v.norm()
    vs, alphas, betas = [v], [], []
    prev = None
    for _ in range(min(max_iter, n)):
        w = matvec(vs[-1])
        alpha = torch.dot(w, vs[-1])
        alphas.append(alpha)
        basis = torch.stack(vs, 1)
        w = w - basis @ (basis.T @ w)
        w = w - basis @ (basis.T @ w)  # twice is enough (Kahan)
        beta = w.norm()
        t = torch.diag(torch.stack(alphas))
        if betas:
            b = torch.stack(betas)
            t = t + torch.diag(b, 1) + torch.diag(b, -1)
        top = float(torch.linalg.eigvalsh(t)[-1])
        if prev is not None and abs(top - prev) <= rtol * abs(top):
            return top
        prev = top
        if float(beta) <= 1e-12 * max(abs(top), 1e-300):  # invariant subspace found: exact
            return top
        betas.append(beta)
        vs.append(w / beta)
    return prev if prev is not None else 0.0


def _lanczos_steps(a: torch.Tensor, steps: int, seed: int = 0) -> float:
    """Largest eigenvalue of ``a^T a`` (a: (r, c)) after at most ``steps`` Lanczos steps, in a's dtype.

    Full reorthogonalization (twice, Kahan); the start vector is Gaussian (uniform direction) from a
    fixed seed; it stops early on an invariant subspace, so c <= steps gives the exact value.
    """
    c = a.shape[1]
    k = min(steps, c)
    g = torch.Generator(device="cpu").manual_seed(seed)
    basis = torch.empty(k + 1, c, dtype=a.dtype, device=a.device)
    v = torch.randn(c, generator=g, dtype=a.dtype).to(a.device)
    basis[0] = v / v.norm()
    alphas, betas = [], []
    for j in range(k):
        w = a.T.mv(a.mv(basis[j]))  # (c,)
        alphas.append(torch.dot(w, basis[j]))
        q = basis[: j + 1]
        w -= q.T.mv(q.mv(w))
        w -= q.T.mv(q.mv(w))
        beta = w.norm()
        if j == k - 1 or float(beta) == 0.0:  # done, or an invariant subspace: exact
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    t = torch.diag(torch.stack(alphas).double())
    if betas:
        b = torch.stack(betas).double()
        t = t + torch.diag(b, 1) + torch.diag(b, -1)
    return float(torch.linalg.eigvalsh(t.cpu())[-1])


def spectral_norm(w, *, exact_max: int = 512, rtol: float = 1e-7, max_iter: int = 300,
                  steps: int | None = None) -> float:
    """Largest singular value of the 2-D view ``(shape[0], -1)`` of ``w`` (1-D: the l2 norm).

    ``torch.linalg.matrix_norm(ord=2)`` (an SVD, float64) when the smaller side is <= ``exact_max``.
    Above that an SVD costs O(n^3) (27 s for 4096 x 4096 in float64 on one core), so Lanczos on
    ``W^T W`` (the smaller side) with full reorthogonalization is used instead:

    * ``steps=None`` (default): in float64, until the top Ritz value moves by less than ``rtol``
      (exact after rank(W) + 1 steps for low-rank matrices such as the updates of a few steps).
    * ``steps=k``: k steps in w's dtype (at least float32) from a random start, no convergence test:
      O(k) matrix-vector products. The result never exceeds the true norm (a Ritz value is a lower
      bound), and with the start drawn at random, Kuczynski & Wozniakowski (1992, SIAM J. Matrix
      Anal. Appl. 13(4), Thm 4.2) bound the chance that the top eigenvalue of W^T W is underestimated
      by more than a relative eps by 1.648 sqrt(n) exp(-sqrt(eps) (2k - 1)) for an n-dimensional side,
      whatever the spectrum (counting our k steps as their k - 1, to be safe). The singular value's
      relative error is about eps / 2: for k = 20, n <= 4096, below 2.5% with probability >= 97%
      (docs/coord_speed.md); on Gaussian and low-rank matrices it is far smaller (measured: < 0.5%).
    """
    a = _view2d(w)
    if min(a.shape) == 1:
        return float(a.double().norm())
    if min(a.shape) <= exact_max:
        return float(torch.linalg.matrix_norm(a.double(), ord=2))
    if steps is not None:
        if a.dtype not in (torch.float32, torch.float64):
            a = a.float()
        if a.shape[0] < a.shape[1]:
            a = a.T
        return math.sqrt(max(_lanczos_steps(a, steps), 0.0))
    a = a.double()
    r, c = a.shape
    if float(a.abs().max()) == 0.0:
        return 0.0
    if r >= c:
        top = _lanczos_top(lambda v: a.T @ (a @ v), c, a.dtype, a.device, rtol, max_iter)
    else:
        top = _lanczos_top(lambda v: a @ (a.T @ v), r, a.dtype, a.device, rtol, max_iter)
    return math.sqrt(max(top, 0.0))


def weight_change(w0, wt, **spectral_kw) -> dict[str, float]:
    """Relative movement of one weight: {"fro": ||dW||_F / ||W_0||_F, "spec": ||dW||_2 / ||W_0||_2}."""
    w0, wt = _view2d(w0).double(), _view2d(wt).double()
    if w0.shape != wt.shape:
        raise ValueError(f"shapes differ: {tuple(w0.shape)} vs {tuple(wt.shape)}")
    d = wt - w0
    return {"fro": float(d.norm() / w0.norm()),
            "spec": spectral_norm(d, **spectral_kw) / spectral_norm(w0, **spectral_kw)}


def _params(x) -> dict[str, torch.Tensor]:
    if isinstance(x, nn.Module):
        return {n: p.detach() for n, p in x.named_parameters()}
    return {n: torch.as_tensor(v).detach() for n, v in x.items()}


def weight_changes(params0, params_t, names: Iterable[str] | None = None, **spectral_kw) -> dict[str, dict[str, float]]:
    """`weight_change` for every parameter (or ``names``): modules or dicts name -> tensor.

    Parameters that are exactly zero at t0 (zero-initialized biases, readouts) have no relative
    change; they are reported with the absolute norms of the change instead: {"fro_abs", "spec_abs"}.
    """
    p0, pt = _params(params0), _params(params_t)
    names = [n for n in p0 if p0[n].is_floating_point()] if names is None else list(names)
    out = {}
    for n in names:
        if float(p0[n].abs().max()) == 0.0:
            d = (pt[n] - p0[n]).double()
            out[n] = {"fro_abs": float(d.norm()), "spec_abs": spectral_norm(d, **spectral_kw)}
        else:
            out[n] = weight_change(p0[n], pt[n], **spectral_kw)
    return out


def subspace_fraction(dw, u) -> float:
    """Fraction of ||dW||_F^2 inside span(U): ||dW U^T U||_F^2 / ||dW||_F^2.

    ``dw``: a first-layer change (n, d) (fan_out x fan_in); ``u``: (k, d) whose rows span the teacher's
    subspace. The rows are orthonormalized here (QR), so any basis of the subspace gives the same value.
    """
    dw, u = _view2d(dw).double(), _view2d(torch.as_tensor(u)).double()
    if u.dim() != 2 or u.shape[1] != dw.shape[1]:
        raise ValueError(f"U must be (k, d) with d = fan_in of dW = {dw.shape[1]}, got {tuple(u.shape)}")
    q, _ = torch.linalg.qr(u.T)  # (d, k) orthonormal basis of span(U)
    return float((dw @ q).square().sum() / dw.square().sum())


