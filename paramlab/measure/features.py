"""How much a network's features move: small pure functions on feature matrices (captured with
`paramlab.measure.capture`; weights: `paramlab.measure.weights`).

Conventions (all results are Python floats computed in float64):

* A *feature matrix* is a module output on a fixed probe batch, flattened to ``(N, p)`` (N examples,
  p = everything else).
* ``rel_change(new, old) = ||new - old||_F / ||old||_F`` (docs/theory.md §3.3's ``R_l`` when applied to
  preactivations: the same as the ratio of coordinate RMS).
* Feature kernel ``F = X X^T / p`` and its change ``||F_t - F_0||_F / ||F_0||_F`` (TP4 Def. 3.5's
  feature kernel, on the probe batch).
* Linear CKA (Kornblith et al. 2019): ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with
  columns centered over examples; 1 iff X and Y agree up to an orthogonal map and isotropic scale.
  ``debiased=True`` uses the unbiased HSIC estimator (Song et al. 2012), which removes the upward
  bias of plain CKA when p is not small against N.
* Kernel-target alignment (Cristianini et al. 2002): ``<K, Y Y^T>_F / (||K||_F ||Y Y^T||_F)``;
  ``center=True`` centers both kernels first (Cortes et al. 2012).
* Effective rank, two definitions (pick with ``method``):
  ``"entropy"`` (Roy & Vetterli 2007): ``exp(H(p))`` with ``p_i = s_i / sum_j s_j`` over the
  singular values ``s`` of X;
  ``"participation"`` (participation ratio): ``(sum_i l_i)^2 / sum_i l_i^2`` over the eigenvalues
  ``l_i = s_i^2`` of ``X^T X``.
  Both equal r for a matrix with r equal nonzero singular values; the participation ratio weighs
  the top of the spectrum more.
"""

from __future__ import annotations

from typing import Mapping

import torch


def _mat(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, p) float64."""
    x = torch.as_tensor(x).detach()
    if x.dim() == 0:
        raise ValueError("expected a feature matrix (N, ...), got a scalar")
    if x.dim() == 1:
        x = x[:, None]
    return x.reshape(x.shape[0], -1).to(torch.float64)


def rel_change(new, old) -> float:
    """||new - old||_F / ||old||_F."""
    new, old = torch.as_tensor(new).detach().double(), torch.as_tensor(old).detach().double()
    if new.shape != old.shape:
        raise ValueError(f"shapes differ: {tuple(new.shape)} vs {tuple(old.shape)}")
    return float((new - old).norm() / old.norm())


def feature_kernel(x) -> torch.Tensor:
    """F = X X^T / p for a feature matrix X (N, p): the (uncentered) feature kernel on the batch."""
    x = _mat(x)
    return x @ x.T / x.shape[1]


def kernel_change(f0, ft) -> float:
    """||F_t - F_0||_F / ||F_0||_F of the feature kernels of two feature matrices on the same batch."""
    return rel_change(feature_kernel(ft), feature_kernel(f0))


def _center_gram(k: torch.Tensor) -> torch.Tensor:
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012), up to a positive constant that cancels in CKA."""
    n = k.shape[0]
    if n < 4:
        raise ValueError("debiased CKA needs at least 4 examples")
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    one = torch.ones(n, dtype=k.dtype)
    kl = (k * l).sum()
    return kl + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 * (one @ k @ (l @ one)) / (n - 2)


def linear_cka(x, y, *, debiased: bool = False) -> float:
    """Linear CKA between two feature matrices on the same N examples (Kornblith et al. 2019).

    X (N, p) and Y (N, q), any p, q. Invariant to orthogonal maps and isotropic scaling of either.
    Plain CKA is biased upward when p, q are not small against N (two independent random feature
    sets with p >> N have CKA near 1); ``debiased=True`` uses the unbiased HSIC estimator.
    """
    x, y = _mat(x), _mat(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    if debiased:
        k, l = x @ x.T, y @ y.T
        num = _hsic_unbiased(k, l)
        return float(num / torch.sqrt(_hsic_unbiased(k, k) * _hsic_unbiased(l, l)))
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    if n * n <= p * q:  # Gram form is cheaper when features are wide
        k, l = x @ x.T, y @ y.T
        return float((k * l).sum() / (k.norm() * l.norm()))
    return float((y.T @ x).square().sum() / ((x.T @ x).norm() * (y.T @ y).norm()))


def kernel_alignment(k, y, *, center: bool = False) -> float:
    """Kernel-target alignment <K, Y Y^T>_F / (||K||_F ||Y Y^T||_F).

    ``k``: an (N, N) kernel matrix; ``y``: targets (N,) or (N, c) (e.g. one-hot labels).
    ``center=True``: centered alignment (Cortes et al. 2012), both kernels centered first.
    """
    k = torch.as_tensor(k).detach().double()
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k must be a square (N, N) kernel matrix, got shape {tuple(k.shape)}")
    y = _mat(y)
    if y.shape[0] != k.shape[0]:
        raise ValueError(f"y has {y.shape[0]} rows but k is {k.shape[0]} x {k.shape[0]}")
    t = y @ y.T
    if center:
        k, t = _center_gram(k), _center_gram(t)
    return float((k * t).sum() / (k.norm() * t.norm()))


def effective_rank(x, method: str = "entropy", *, center: bool = False) -> float:
    """Effective rank of a feature matrix X (N, p) (see the module docstring for the definitions).

    method: ``"entropy"`` (Roy & Vetterli 2007, exp of the entropy of normalized singular values) or
    ``"participation"`` ((sum l)^2 / sum l^2 over eigenvalues l = s^2 of X^T X). ``center=True``
    subtracts the mean over examples first (rank of the covariance rather than of the raw features).
    """
    x = _mat(x)
    if center:
        x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if float(s.sum()) == 0.0:
        return 0.0
    if method == "entropy":
        p = s / s.sum()
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))
    if method in ("participation", "pr"):
        lam = s.square()
        return float(lam.sum() ** 2 / lam.square().sum())
    raise ValueError(f"unknown effective-rank method {method!r}: use 'entropy' or 'participation'")


def feature_metrics(f0: Mapping[str, torch.Tensor], ft: Mapping[str, torch.Tensor], y=None,
                    *, rank_method: str = "entropy") -> dict[str, dict[str, float]]:
    """Per layer, compare features at init ``f0`` and after training ``ft`` (dicts name -> (N, ...)).

    Returns name -> {rel_change, kernel_change, cka, erank_0, erank_t} and, with targets ``y``,
    {align_0, align_t} (centered kernel-target alignment of the feature kernels).
    """
    out = {}
    for n in f0:
        if n not in ft:
            continue
        a, b = _mat(f0[n]), _mat(ft[n])
        row = {"rel_change": rel_change(b, a), "kernel_change": kernel_change(a, b), "cka": linear_cka(a, b),
               "erank_0": effective_rank(a, rank_method), "erank_t": effective_rank(b, rank_method)}
        if y is not None:
            row["align_0"] = kernel_alignment(feature_kernel(a), y, center=True)
            row["align_t"] = kernel_alignment(feature_kernel(b), y, center=True)
        out[n] = row
    return out
