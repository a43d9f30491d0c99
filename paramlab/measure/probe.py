"""Linear probes and kernel ridge regression with the ridge picked by leave-one-out error.

One procedure for every few-shot readout in paramlab: a probe on a network's features is kernel
ridge regression with the linear kernel K = F F^T / p, and the NNGP / NTK baselines are the same
regression with the analytic kernels. All fit an unpenalized intercept (the kernel and targets are
centred on the training set). The ridge is chosen from a fixed grid (relative to the mean
eigenvalue of the centred kernel) by the exact leave-one-out residual of that estimator,

    r_loo = (y - H y) / (1 - diag H) = alpha / diag (Kc + lam I)^-1   (constant direction removed),

(Rifkin & Lippert 2007, "Notes on regularized least squares", §4), so no test point is looked at
and every method gets the same treatment.
"""

from __future__ import annotations

import torch

RIDGES = tuple(10.0 ** e for e in range(-6, 3))  # times the mean eigenvalue of the centred kernel


@torch.no_grad()
def kernel_ridge_loo(k_train: torch.Tensor, y_train: torch.Tensor, k_test_train: torch.Tensor,
                     ridges=RIDGES) -> tuple[torch.Tensor, float]:
    """Predictions on the test points and the chosen ridge (relative to the mean eigenvalue).

    k_train (n, n) PSD, y_train (n,) or (n, k), k_test_train (m, n). Computed in float64. A kernel that
    is constant once centred (features constant on the training set, e.g. every ReLU unit of a width-1
    layer dead) fits the intercept only: the training mean, ridge inf.
    """
    K, Y, Ks = k_train.double(), y_train.double(), k_test_train.double()
    if Y.dim() == 1:
        Y = Y[:, None]
    if not (bool(torch.isfinite(K).all()) and bool(torch.isfinite(Ks).all())):
        raise ValueError("kernel ridge regression got a kernel with NaN/inf entries (features that are not finite)")
    n = K.shape[0]
    # centre: Kc = P K P with P = I - 11^T/n (an unpenalized intercept); the test rows likewise
    col = K.mean(0, keepdim=True)  # (1, n)
    Kc = K - col - col.T + K.mean()
    Ksc = Ks - col - Ks.mean(1, keepdim=True) + K.mean()
    y_mean = Y.mean(0, keepdim=True)
    Yc = Y - y_mean
    if not bool(Kc.abs().max() > 1e-12 * float(K.abs().max())):  # constant features (all units dead)
        return y_mean.expand(Ks.shape[0], -1).clone(), float("inf")  # only the intercept fits: the mean
    s, V = torch.linalg.eigh(Kc)  # (n,), (n, n)
    # drop the constant direction (Kc 1 = 0): the intercept fits it, the ridge must not count it
    const = (V.T @ torch.full((n,), n ** -0.5, dtype=V.dtype)).abs().argmax()
    keep = torch.arange(n) != const
    s, V = s[keep].clamp_min(0), V[:, keep]
    scale = float(s.mean()) or 1.0
    VtY = V.T @ Yc  # (n-1, k)
    best = (float("inf"), None)
    for r in ridges:
        inv = 1 / (s + r * scale)  # eigenvalues of (Kc + lam I)^-1 on the centred subspace
        alpha = V @ (inv[:, None] * VtY)  # (n, k) dual coefficients
        g = (V**2) @ inv  # (n,) diag of (Kc + lam I)^-1 there
        # y - H y = lam * alpha and 1 - diag H = lam * g: their ratio has no cancellation
        loo = float((alpha / g[:, None]).pow(2).mean())
        if loo < best[0]:
            best = (loo, r)
    r = best[1]
    alpha = V @ ((1 / (s + r * scale))[:, None] * VtY)
    return Ksc @ alpha + y_mean, r


def linear_probe(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, ridges=RIDGES):
    """Ridge regression (with intercept) on features (n, p): (predictions for f_test, chosen ridge)."""
    a, b = f_train.double().flatten(1), f_test.double().flatten(1)
    p = a.shape[1]
    return kernel_ridge_loo(a @ a.T / p, y_train, b @ a.T / p, ridges)


def score(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """R^2 (and MSE) for real targets (n, k); accuracy for integer labels (n,) against (n, C) scores."""
    if y.dtype == torch.int64:
        return {"acc": float((pred.argmax(-1) == y).double().mean())}
    y = y.double().reshape(pred.shape)
    mse = float((pred - y).pow(2).mean())
    return {"mse": mse, "r2": 1 - mse / float(y.var(unbiased=False))}
