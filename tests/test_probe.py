import pytest
import torch

from paramlab.measure.probe import kernel_ridge_loo, linear_probe, score


def brute_loo(F, y, lam):
    n, errs = len(F), []
    for i in range(n):
        idx = torch.arange(n) != i
        a = F[idx] - F[idx].mean(0)
        alpha = torch.linalg.solve(a @ a.T + lam * torch.eye(n - 1, dtype=F.dtype), y[idx] - y[idx].mean())
        errs.append(float(((F[i] - F[idx].mean(0)) @ a.T @ alpha + y[idx].mean() - y[i]) ** 2))
    return sum(errs) / n


def test_closed_form_loo_picks_the_brute_force_ridge():
    g = torch.Generator().manual_seed(0)
    F = torch.randn(40, 60, generator=g, dtype=torch.float64)
    y = F[:, :3].sum(1) + 0.5 * torch.randn(40, generator=g, dtype=torch.float64) + 2.0
    ridges = (1e-4, 1e-2, 1.0, 1e2)
    _, chosen = linear_probe(F, y, F, ridges)
    K = F @ F.T / 60
    Kc = K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()
    scale = float(torch.linalg.eigvalsh(Kc).clamp_min(0).sum() / 39)
    brute = {r: brute_loo(F / 60 ** 0.5, y, r * scale) for r in ridges}
    assert chosen == min(brute, key=brute.get)


def test_probe_recovers_a_linear_function_with_intercept_and_scores():
    g = torch.Generator().manual_seed(1)
    F, Ft = torch.randn(100, 5, generator=g), torch.randn(50, 5, generator=g)
    w = torch.randn(5, 2, generator=g)
    pred, _ = linear_probe(F, F @ w + 3.0, Ft)
    assert score(pred, Ft @ w + 3.0)["r2"] > 0.99
    labels = torch.tensor([0, 1, 1])
    assert score(torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, 0.0]]), labels)["acc"] == 2 / 3
    # kernel form: predictions at the training points with a tiny ridge interpolate
    K = F @ F.T
    p, _ = kernel_ridge_loo(K + torch.eye(100), F[:, 0], K + torch.eye(100), ridges=(1e-8,))
    assert torch.allclose(p[:, 0], F[:, 0].double(), atol=1e-3)


def test_constant_features_fit_the_intercept_and_nan_features_are_refused():
    """Every unit of a width-1 ReLU layer dead: the features are constant, the probe predicts the training
    mean (r2 0 on the training rows), not a TypeError from an empty ridge choice; NaN features are an error."""
    from paramlab.measure.probe import linear_probe

    y = torch.randn(20, 2, dtype=torch.float64)
    for f in (torch.zeros(20, 1), torch.full((20, 3), 2.5)):
        pred, ridge = linear_probe(f, y, f[:7])
        assert ridge == float("inf") and torch.allclose(pred, y.mean(0).expand(7, 2))
    pred, ridge = linear_probe(torch.randn(20, 3), y, torch.randn(7, 3))  # negative control: a real fit
    assert ridge != float("inf") and not torch.allclose(pred, y.mean(0).expand(7, 2))
    with pytest.raises(ValueError, match="NaN/inf"):
        linear_probe(torch.full((20, 3), float("nan")), y, torch.zeros(7, 3))
