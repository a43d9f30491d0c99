"""How much a network's features and weights move: small pure functions on tensors, and a forward-hook
context manager that captures named module outputs.

Conventions (all results are Python floats computed in float64):

* A *feature matrix* is a module output on a fixed probe batch, flattened to ``(N, p)`` (N examples,
  p = everything else).
* ``rel_change(new, old) = ||new - old||_F / ||old||_F`` (THEORY.md §3.3's ``R_l`` when applied to
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
* Weight movement ``||W_t - W_0|| / ||W_0||`` in spectral and Frobenius norms (on the 2-D view
  ``(fan_out, -1)``). Multipliers cancel in these ratios, so raw parameters are fine.
* For a multi-index teacher ``y = g(U x)`` (U: k x d with orthonormal rows) the fraction of a
  first-layer change ``dW`` (n x d) that lies in span(U): ``||dW U^T U||_F^2 / ||dW||_F^2``
  (1 for a change inside the span, ~k/d for a random one).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

__all__ = [
    "Capture", "capture", "features", "rel_change", "feature_kernel", "kernel_change", "linear_cka",
    "kernel_alignment", "effective_rank", "spectral_norm", "weight_change", "weight_changes",
    "subspace_fraction", "feature_metrics",
]


# -- capturing module outputs ------------------------------------------------------------------------


def leaf_module_names(model: nn.Module) -> list[str]:
    """Names of modules without children (the root itself if it has none)."""
    return [n for n, m in model.named_modules() if not any(True for _ in m.children())]


class Capture(Mapping):
    """Outputs of named modules recorded by forward hooks (a read-only mapping name -> tensor).

    A module called once per forward pass is recorded under its name; a module called k > 1 times
    (e.g. one activation module shared by all layers) under ``name[0]``, ..., ``name[k-1]``. Calls
    accumulate until ``clear()``, so clear between forward passes. ``order`` lists the recorded names
    in the order the calls *finished* (a container finishes after its children). Non-tensor outputs
    (tuples, dicts) are skipped.
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None, *, detach: bool = True,
                 clone: bool = True):
        mods = dict(model.named_modules())
        names = leaf_module_names(model) if names is None else list(names)
        unknown = [n for n in names if n not in mods]
        if unknown:
            raise ValueError(f"no module named {unknown[:5]} in the model; modules are e.g. {list(mods)[:8]}")
        self.names = names
        self.detach, self.clone = detach, clone
        self._calls: dict[str, list[torch.Tensor]] = {}
        self._order: list[tuple[str, int]] = []
        self._handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(module, args, out):
            if not isinstance(out, torch.Tensor):
                return None
            t = out.detach() if self.detach else out
            if self.clone:
                t = t.clone()
            calls = self._calls.setdefault(name, [])
            self._order.append((name, len(calls)))
            calls.append(t)
            return None

        return hook

    def _key(self, name: str, i: int) -> str:
        return name if len(self._calls[name]) == 1 else f"{name}[{i}]"

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        return {self._key(n, i): self._calls[n][i] for n, i in self._order}

    @property
    def order(self) -> list[str]:
        return [self._key(n, i) for n, i in self._order]

    def clear(self) -> None:
        self._calls.clear()
        self._order.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __getitem__(self, key):
        return self.outputs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self._order)


@contextmanager
def capture(model: nn.Module, names: Iterable[str] | None = None, *, detach: bool = True, clone: bool = True):
    """Context manager: record the outputs of modules ``names`` (default: all leaf modules).

        with capture(model, ["layers.0", "layers.1"]) as feats:
            model(x)
        h1 = feats["layers.1"]

    Hooks are removed on exit. See `Capture` for the naming of modules called several times.
    """
    cap = Capture(model, names, detach=detach, clone=clone)
    try:
        yield cap
    finally:
        cap.remove()


@torch.no_grad()
def features(model: nn.Module, x, names: Iterable[str] | None = None, params: Mapping[str, torch.Tensor] | None = None
             ) -> dict[str, torch.Tensor]:
    """Module outputs on the probe batch ``x`` (one no-grad forward pass), name -> tensor.

    ``params`` (name -> tensor, e.g. a checkpoint's state dict) evaluates the model at those values
    with ``torch.func.functional_call`` instead of its own parameters.
    """
    with capture(model, names) as cap:
        if params is None:
            model(x)
        else:
            torch.func.functional_call(model, dict(params), (x,))
        return dict(cap.outputs)


# -- feature metrics -----------------------------------------------------------------------------------


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


# -- weights -------------------------------------------------------------------------------------------


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


def spectral_norm(w, *, exact_max: int = 512, rtol: float = 1e-7, max_iter: int = 300) -> float:
    """Largest singular value of the 2-D view ``(shape[0], -1)`` of ``w`` (1-D: the l2 norm).

    ``torch.linalg.matrix_norm(ord=2)`` (an SVD) when the smaller side is <= ``exact_max``; above that
    an SVD costs O(n^3) (27 s for 4096 x 4096 in float64 on one core), so Lanczos on ``W^T W`` with full
    reorthogonalization is used instead, converged to relative ``rtol`` in the top eigenvalue (exact
    after rank(W) + 1 steps for low-rank matrices such as the updates of a few steps).
    """
    a = _view2d(w).double()
    r, c = a.shape
    if min(r, c) == 1:
        return float(a.norm())
    if min(r, c) <= exact_max:
        return float(torch.linalg.matrix_norm(a, ord=2))
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
