"""Tests for paramlab.measure.kernels: analytic NNGP/NTK of MLPs and infinite-width MSE dynamics.

References checked here: docs/theory.md section 6 (recursions, the worked example of 6.3, the ReLU
invariant of 6.2, the NT conventions of 6.4), Gaussian quadrature for the erf closed forms, and
Monte-Carlo estimates from explicit wide NTK-parameterized networks written below in plain torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from paramlab.measure.kernel_regression import gd_mse_prediction, kernel_regression
from paramlab.measure.kernels import ACTIVATIONS, MLPKernel, nngp_ntk

F64 = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


# --------------------------------------------------------------------------------------------------
# docs/theory.md 6.3 worked example and the 6.2 invariant
# --------------------------------------------------------------------------------------------------


def test_theory_worked_example():
    """docs/theory.md 6.3: one hidden ReLU layer, W_std = sqrt(2), no bias, x = (1,0,0), x' = (.6,.8,0).

    Layers: Sigma^1 is the NNGP of the first Dense layer's pre-activations (= the readout NNGP of a
    depth-0 net); Sigma^2 and Theta are the NNGP and NTK at the readout of the depth-1 net:
        Sigma^1 = 2 * 0.6/3 = 0.4,  q = q' = 2/3,  cos(theta) = 0.6
        Sigma^2 = 2 * [sqrt(4/9 - 0.16)/(2 pi) + (pi - acos 0.6)/(2 pi) * 0.4]     = 0.451698
        Theta   = Sigma^2 + 2 * 0.4 * (pi - acos 0.6)/(2 pi)                      = 0.733631
    """
    x = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]], dtype=F64)
    w = math.sqrt(2.0)
    k1 = MLPKernel(depth=0, activation="relu", W_std=w).both(x)  # first Dense layer
    assert k1.nngp[0, 1].item() == pytest.approx(0.4, abs=5e-6)
    assert k1.nngp[0, 0].item() == pytest.approx(2 / 3, abs=5e-6)
    assert k1.nngp[1, 1].item() == pytest.approx(2 / 3, abs=5e-6)
    cos = k1.nngp[0, 1] / torch.sqrt(k1.nngp[0, 0] * k1.nngp[1, 1])
    assert cos.item() == pytest.approx(0.6, abs=5e-6)

    k = MLPKernel(depth=1, activation="relu", W_std=w).both(x)  # readout of the depth-1 net
    assert k.nngp[0, 1].item() == pytest.approx(0.451698, abs=5e-6)
    assert k.ntk[0, 1].item() == pytest.approx(0.733631, abs=5e-6)
    # Same numbers from the closed forms of docs/theory.md 6.2, written out independently.
    th = math.acos(0.6)
    sig2 = 2 * (2 / 3) / (2 * math.pi) * (math.sin(th) + (math.pi - th) * 0.6)
    assert k.nngp[0, 1].item() == pytest.approx(sig2, rel=1e-12)
    theta = sig2 + 2 * 0.4 * (math.pi - th) / (2 * math.pi)
    assert k.ntk[0, 1].item() == pytest.approx(theta, rel=1e-12)
    # x and x' have the same norm: the diagonal follows the invariant below.
    assert k.nngp[0, 0].item() == pytest.approx(2 / 3, rel=1e-12)
    assert k.ntk[0, 0].item() == pytest.approx(4 / 3, rel=1e-12)


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 5])
def test_relu_critical_invariant(depth):
    """W_std^2 = 2, no bias, ReLU: K^l(x,x) = 2||x||^2/d at all layers; Theta = (L+1) 2||x||^2/d."""
    x = _rand(7, 4, seed=1) * torch.linspace(0.3, 3.0, 7, dtype=F64)[:, None]
    target = 2 * (x * x).sum(-1) / x.shape[-1]
    # The readout of a depth-l net is the (l+1)-th Dense layer of a deeper one: check every layer.
    for l in range(depth + 1):
        k = MLPKernel(l, "relu", math.sqrt(2.0)).both(x)
        torch.testing.assert_close(torch.diagonal(k.nngp), target, rtol=1e-12, atol=0)
        torch.testing.assert_close(torch.diagonal(k.ntk), (l + 1) * target, rtol=1e-12, atol=0)
    kd = MLPKernel(depth, "relu", math.sqrt(2.0)).both(x, diag=True)
    torch.testing.assert_close(kd.nngp, target, rtol=1e-12, atol=0)
    torch.testing.assert_close(kd.ntk, (depth + 1) * target, rtol=1e-12, atol=0)


def test_linear_activation_closed_form():
    """Linear net, no bias: K = w^(L+1) K0 and Theta = (L+1) w^(L+1) K0 with w = W_std^2."""
    x = _rand(5, 3, seed=2)
    k0 = x @ x.T / 3
    for depth in range(4):
        w = 1.3**2
        k = MLPKernel(depth, "linear", 1.3).both(x)
        torch.testing.assert_close(k.nngp, w ** (depth + 1) * k0, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(k.ntk, (depth + 1) * w ** (depth + 1) * k0,
                                   rtol=1e-12, atol=1e-14)
    # With bias, depth 0: K = w K0 + b^2 = Theta.
    k = MLPKernel(0, "linear", 1.3, 0.7).both(x)
    torch.testing.assert_close(k.nngp, 1.69 * k0 + 0.49, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(k.ntk, k.nngp, rtol=1e-12, atol=1e-14)
    # 'ntk' parameterization: b_std = 0.0 and b_std = None give the same kernels
    for act in ACTIVATIONS:
        k_none, k_zero = MLPKernel(2, act, 1.2, None).both(x), MLPKernel(2, act, 1.2, 0.0).both(x)
        torch.testing.assert_close(k_zero.nngp, k_none.nngp, rtol=0, atol=0)
        torch.testing.assert_close(k_zero.ntk, k_none.ntk, rtol=0, atol=0)


def test_erf_closed_forms_against_quadrature():
    """erf maps vs 2-D Gauss-Hermite quadrature of E[erf(u)erf(v)] and E[erf'(u)erf'(v)]."""
    xs, ws = np.polynomial.hermite_e.hermegauss(100)  # weight exp(-x^2/2)
    ws = ws / ws.sum()
    z1, z2 = np.meshgrid(xs, xs, indexing="ij")
    w2 = np.outer(ws, ws)
    from scipy.special import erf

    x = torch.tensor([[1.0, 0.2], [0.4, -1.1], [1.5, 0.9]], dtype=F64)
    kern = MLPKernel(1, "erf", W_std=1.0, b_std=0.3)
    k = kern.both(x)
    k1 = MLPKernel(0, "erf", W_std=1.0, b_std=0.3).nngp(x)  # covariance of the pre-activations
    for i in range(3):
        for j in range(3):
            q, qp, c = k1[i, i].item(), k1[j, j].item(), k1[i, j].item()
            # (u, v) = L (z1, z2), L the Cholesky factor of [[q, c], [c, q']]
            u = math.sqrt(q) * z1
            r = c / math.sqrt(q)
            v = r * z1 + math.sqrt(max(qp - r * r, 0.0)) * z2
            e_ff = float((w2 * erf(u) * erf(v)).sum())
            e_dd = float((w2 * (4 / math.pi) * np.exp(-u * u - v * v)).sum())
            # readout Dense: K = W^2 E[ff] + b^2; Theta = K + W^2 * Theta1 * E[f'f'], Theta1 = k1
            assert k.nngp[i, j].item() == pytest.approx(e_ff + 0.09, abs=1e-9)
            assert k.ntk[i, j].item() == pytest.approx(e_ff + 0.09 + c * e_dd, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# API behaviour: x1 != x2, diag, batching, dtype, validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cross_kernel_diag_and_batch_consistency(activation):
    kern = MLPKernel(depth=2, activation=activation, W_std=1.4, b_std=0.2)
    x1 = _rand(4, 6, seed=3)
    x2 = 2.0 * _rand(3, 6, seed=4)
    joint = kern.both(torch.cat([x1, x2]))
    cross = kern.both(x1, x2)
    assert cross.nngp.shape == cross.ntk.shape == (4, 3)
    torch.testing.assert_close(cross.nngp, joint.nngp[:4, 4:], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(cross.ntk, joint.ntk[:4, 4:], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(joint.nngp, joint.nngp.T, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(joint.ntk, joint.ntk.T, rtol=1e-14, atol=1e-14)
    assert torch.linalg.eigvalsh(joint.nngp).min() > -1e-12
    assert torch.linalg.eigvalsh(joint.ntk).min() > -1e-12
    # diag=True: aligned pairs K(x1[i], x2[i])
    x3 = _rand(4, 6, seed=5)
    d = kern.both(x1, x3, diag=True)
    full = kern.both(x1, x3)
    torch.testing.assert_close(d.nngp, torch.diagonal(full.nngp), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d.ntk, torch.diagonal(full.ntk), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(kern.nngp(x1, diag=True), torch.diagonal(joint.nngp)[:4],
                               rtol=1e-12, atol=0)
    # leading batch dimensions
    xb = _rand(3, 5, 6, seed=6)
    kb = kern.both(xb)
    assert kb.nngp.shape == (3, 5, 5)
    for b in range(3):
        torch.testing.assert_close(kb.ntk[b], kern.ntk(xb[b]), rtol=1e-12, atol=1e-14)
    # functional form, float64 output for float32 input
    f = nngp_ntk(x1.float(), x2.float(), depth=2, activation=activation, W_std=1.4, b_std=0.2)
    assert f.nngp.dtype == F64 and f.ntk.dtype == F64
    torch.testing.assert_close(f.ntk, cross.ntk, rtol=1e-6, atol=1e-6)


def test_relu_numerically_safe_at_parallel_and_zero_inputs():
    x = torch.tensor([[1.0, 2.0], [2.0, 4.0], [-1.0, -2.0], [0.0, 0.0]], dtype=F64)
    k = MLPKernel(3, "relu", math.sqrt(2.0)).both(x)
    assert torch.isfinite(k.nngp).all() and torch.isfinite(k.ntk).all()
    # parallel inputs: K(x, 2x) = 2 K(x, x); antiparallel after one ReLU layer: K = 0
    torch.testing.assert_close(k.nngp[0, 1], 2 * k.nngp[0, 0], rtol=1e-12, atol=0)
    k1 = MLPKernel(1, "relu", math.sqrt(2.0)).both(x)
    assert abs(k1.nngp[0, 2].item()) < 1e-15 and abs(k1.ntk[0, 2].item()) < 1e-15
    assert (k.nngp[3] == 0).all() and (k.ntk[3] == 0).all()


def test_validation_errors():
    with pytest.raises(ValueError, match=r"unknown activation 'tanh'.*'relu', 'erf', 'linear'"):
        MLPKernel(1, "tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        nngp_ntk(torch.ones(2, 3), activation="gelu")
    with pytest.raises(ValueError, match="depth must be >= 0"):
        MLPKernel(-1)
    with pytest.raises(ValueError, match="depth"):
        MLPKernel(1.5)
    with pytest.raises(ValueError, match="same number of features"):
        MLPKernel(1).nngp(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., n, d\)"):
        MLPKernel(1).nngp(torch.ones(3))
    with pytest.raises(ValueError, match="diag=True"):
        MLPKernel(1).nngp(torch.ones(2, 3), torch.ones(3, 3), diag=True)
    k = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="y_train"):
        kernel_regression(k, torch.ones(4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="k_test_train"):
        kernel_regression(k, torch.ones(3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="k_train_train"):
        gd_mse_prediction(torch.ones(3, 2), torch.ones(3), None, 1.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        gd_mse_prediction(k, torch.ones(3), None, -1.0)


# --------------------------------------------------------------------------------------------------
# Monte-Carlo: explicit wide NTK-parameterized networks in plain torch
# --------------------------------------------------------------------------------------------------

MC_WIDTH = 4096  # every hidden layer
MC_OUT = 4096  # readout units averaged for the NNGP (per-channel kernel, iid across channels)
MC_OUT_NTK = 4  # of those, the units whose per-output empirical NTK is averaged
MC_SEEDS = 32  # independent networks
MC_DEPTHS = (1, 2, 3)
MC_COMBOS = [("relu", math.sqrt(2.0), None), ("relu", math.sqrt(2.0), 0.5),
             ("erf", 1.5, None), ("erf", 1.5, 0.5)]  # (activation, W_std, b_std)
MC_RTOL = 0.03  # relative Frobenius error


def _mc_inputs():
    # 6 inputs in d = 5 with different norms
    return _rand(6, 5, seed=0) * torch.tensor([0.5, 1.0, 1.5, 1.0, 2.0, 0.8], dtype=F64)[:, None]


def _act(name):
    if name == "relu":
        return torch.relu, lambda z: (z > 0).to(z.dtype)
    return torch.erf, lambda z: (2 / math.sqrt(math.pi)) * torch.exp(-z * z)


def _mc_kernels(x, seeds, width=MC_WIDTH, n_out=MC_OUT, n_out_ntk=MC_OUT_NTK, dtype=torch.float32):
    """Empirical NNGP and NTK of explicit NTK-parameterized MLPs, averaged over seeds.

    Network (neural-tangents 'ntk' parameterization): h_0 = x,
        z_{l+1} = W_std / sqrt(n_l) * h_l @ W_l + b_std * b_l,   h_{l+1} = phi(z_{l+1}),
        f = W_std / sqrt(n_L) * h_L @ V + b_std * b_out,           W, b, V, b_out ~ N(0, 1).
    NNGP estimate: f(x) f(x')^T averaged over the n_out readout units and over seeds.
    NTK estimate, per output o (as nt.empirical_ntk_fn with the logit axis traced = averaged):
        sum_{l=0..L} [W_std^2 / n_l * h_l(x).h_l(x') + b_std^2] * delta^o_{l+1}(x).delta^o_{l+1}(x')
    with delta^o_{l+1} = d f_o / d z_{l+1} by explicit backprop (delta^o_{L+1} = 1), averaged
    over the first n_out_ntk outputs and over seeds.

    One set of weights per seed serves all depths (the depth-L net uses W_0..W_{L-1} and V) and
    all (activation, W_std, b_std) combos; the combos (C) and depths are stacked so that each
    4096 x 4096 matrix is read once per pass (these skinny matmuls are memory bound).
    Returns {(depth, activation, W_std, b_std): (nngp (B, B), ntk (B, B))} in float64.
    """
    B, d = x.shape
    maxdepth = max(MC_DEPTHS)
    C = len(MC_COMBOS)
    k = n_out_ntk
    w_std = torch.tensor([c[1] for c in MC_COMBOS], dtype=dtype)[:, None, None]  # (C, 1, 1)
    b_std = torch.tensor([c[2] or 0.0 for c in MC_COMBOS], dtype=dtype)[:, None, None]  # (C, 1, 1)
    acts = [_act(c[0]) for c in MC_COMBOS]
    nngp = {L: torch.zeros(C, B, B, dtype=F64) for L in MC_DEPTHS}
    ntk = {L: torch.zeros(C, B, B, dtype=F64) for L in MC_DEPTHS}
    for seed in seeds:
        g = torch.Generator().manual_seed(1000 + seed)
        Ws = [torch.randn(d if l == 0 else width, width, generator=g, dtype=dtype)
              for l in range(maxdepth)]  # W_l: (n_l, n_{l+1})
        bs = [torch.randn(width, generator=g, dtype=dtype) for _ in range(maxdepth)]  # (n,)
        V = torch.randn(width, n_out, generator=g, dtype=dtype)  # readout (n_L, n_out)
        b_out = torch.randn(n_out, generator=g, dtype=dtype)  # (n_out,)

        hs, ds = [x.to(dtype).expand(C, B, d)], []  # h_l, phi'(z_l): (C, B, n_l)
        for l in range(maxdepth):
            z = (w_std / math.sqrt(hs[-1].shape[-1])) * (hs[-1] @ Ws[l]) + b_std * bs[l]
            hs.append(torch.stack([phi(z[i]) for i, (phi, _) in enumerate(acts)]))
            ds.append(torch.stack([dphi(z[i]) for i, (_, dphi) in enumerate(acts)]))
        hs64 = [h.double() for h in hs]
        grams = [h @ h.transpose(-1, -2) for h in hs64]  # (C, B, B)
        c_out = w_std / math.sqrt(width)  # (C, 1, 1)

        # NNGP: all depths through the readout at once: (D, C, B, n) @ (n, n_out)
        f = (c_out * (torch.stack([hs[L] for L in MC_DEPTHS]) @ V) + b_std * b_out).double()
        for i, L in enumerate(MC_DEPTHS):
            nngp[L] += f[i] @ f[i].transpose(-1, -2) / n_out
            ntk[L] += (c_out**2).double() * grams[L] + (b_std**2).double()  # readout W and b

        # NTK, hidden layers: deltas[L] = d f_o / d z_{l+1} for the depth-L net, (C, k, B, n)
        v_k = V[:, :k].T[None, :, None, :]  # (1, k, 1, n)
        deltas = {}
        for l in range(maxdepth - 1, -1, -1):
            deltas[l + 1] = c_out[:, :, :, None] * v_k * ds[l][:, None]  # start of depth l+1
            active = [L for L in MC_DEPTHS if L >= l + 1]
            n_l = hs[l].shape[-1]
            layer_term = (w_std**2).double() / n_l * grams[l] + (b_std**2).double()  # (C, B, B)
            for L in active:
                dd = deltas[L].double()
                gdelta = torch.einsum("cobn,cotn->cbt", dd, dd) / k  # (C, B, B)
                ntk[L] += gdelta * layer_term
            if l > 0:  # backprop all active deltas through W_l at once
                stacked = torch.stack([deltas[L] for L in active]) @ Ws[l].T  # (A, C, k, B, n_l)
                scale = (w_std / math.sqrt(n_l))[:, :, :, None]  # (C, 1, 1, 1)
                for j, L in enumerate(active):
                    deltas[L] = scale * stacked[j] * ds[l - 1][:, None]
    S = len(seeds)
    return {(L, *combo): (nngp[L][i] / S, ntk[L][i] / S)
            for L in MC_DEPTHS for i, combo in enumerate(MC_COMBOS)}


@pytest.fixture(scope="module")
def mc_results():
    return _mc_kernels(_mc_inputs(), range(MC_SEEDS))


def _rel_fro(est, ref):
    return (torch.linalg.norm(est - ref) / torch.linalg.norm(ref)).item()


@pytest.mark.slow
@pytest.mark.parametrize("depth", MC_DEPTHS)
@pytest.mark.parametrize("combo", MC_COMBOS, ids=lambda c: f"{c[0]}-b{c[2]}")
def test_monte_carlo_agreement(mc_results, depth, combo):
    act, w_std, b_std = combo
    nngp_mc, ntk_mc = mc_results[(depth, act, w_std, b_std)]
    k = MLPKernel(depth, act, w_std, b_std).both(_mc_inputs())
    e_nngp, e_ntk = _rel_fro(nngp_mc, k.nngp), _rel_fro(ntk_mc, k.ntk)
    msg = f"depth={depth} {act} W_std={w_std:.3f} b_std={b_std}: nngp {e_nngp:.4f}, ntk {e_ntk:.4f}"
    assert e_nngp < MC_RTOL, msg
    assert e_ntk < MC_RTOL, msg


# --------------------------------------------------------------------------------------------------
# Infinite-width training: kernel regression and gradient flow on MSE
# --------------------------------------------------------------------------------------------------


def _regression_problem(n_train=8, n_test=5, k=2):
    x = _rand(n_train + n_test, 4, seed=7)
    kern = MLPKernel(2, "relu", math.sqrt(2.0), 0.1).ntk(x)
    y = torch.sin(3 * x[:n_train, :k])  # (n_train, k)
    return kern[:n_train, :n_train], kern[n_train:, :n_train], y


def test_kernel_regression_solves_and_interpolates():
    k_tt, k_st, y = _regression_problem()
    pred = kernel_regression(k_tt, y, k_st)
    torch.testing.assert_close(pred, k_st @ torch.linalg.solve(k_tt, y), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(kernel_regression(k_tt, y, k_tt), y, rtol=1e-8, atol=1e-9)
    ridge = 0.3
    pred_r = kernel_regression(k_tt, y[:, 0], k_st, ridge=ridge)
    assert pred_r.shape == (5,)
    expected = k_st @ torch.linalg.solve(k_tt + ridge * torch.eye(8, dtype=F64), y[:, 0])
    torch.testing.assert_close(pred_r, expected, rtol=1e-9, atol=1e-10)


def test_gd_infinite_time_is_kernel_regression():
    k_tt, k_st, y = _regression_problem()
    out = gd_mse_prediction(k_tt, y, k_st, math.inf)
    torch.testing.assert_close(out.test, kernel_regression(k_tt, y, k_st), rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(out.train, y, rtol=1e-7, atol=1e-8)
    # with ridge, and 1-D targets
    out_r = gd_mse_prediction(k_tt, y[:, 1], k_st, math.inf, ridge=0.05)
    torch.testing.assert_close(out_r.test, kernel_regression(k_tt, y[:, 1], k_st, ridge=0.05),
                               rtol=1e-9, atol=1e-10)
    # with f0: f_inf(test) = f0_test + K_st K^-1 (y - f0_train)
    f0_tr, f0_te = 0.3 * _rand(8, 2, seed=8), 0.3 * _rand(5, 2, seed=9)
    out0 = gd_mse_prediction(k_tt, y, k_st, math.inf, f0_train=f0_tr, f0_test=f0_te)
    torch.testing.assert_close(out0.test, f0_te + kernel_regression(k_tt, y - f0_tr, k_st),
                               rtol=1e-7, atol=1e-8)


def test_gd_singular_kernel_uses_pseudo_inverse():
    """Duplicate training points: K is singular; t = inf still gives the min-norm interpolant."""
    x = _rand(4, 3, seed=10)
    x = torch.cat([x, x[:1]])  # 5 points, one repeated
    xt = _rand(3, 3, seed=11)
    kern = MLPKernel(1, "relu", math.sqrt(2.0))
    k_tt, k_st = kern.ntk(x), kern.ntk(xt, x)
    y = torch.tensor([1.0, -1.0, 0.5, 2.0, 1.0], dtype=F64)  # consistent labels on the duplicate
    expected = k_st @ torch.linalg.pinv(k_tt, hermitian=True, rtol=1e-10) @ y
    out = gd_mse_prediction(k_tt, y, k_st, math.inf)
    assert torch.isfinite(out.test).all()
    torch.testing.assert_close(out.test, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(kernel_regression(k_tt, y, k_st), expected, rtol=1e-6, atol=1e-7)
    # finite t is finite too
    assert torch.isfinite(gd_mse_prediction(k_tt, y, k_st, [0.0, 10.0, 1e6]).test).all()


def test_gd_time_zero_returns_f0():
    k_tt, k_st, y = _regression_problem()
    f0_tr, f0_te = _rand(8, 2, seed=12), _rand(5, 2, seed=13)
    out = gd_mse_prediction(k_tt, y, k_st, 0.0, lr=0.7, f0_train=f0_tr, f0_test=f0_te)
    torch.testing.assert_close(out.train, f0_tr, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.test, f0_te, rtol=0, atol=1e-12)
    out = gd_mse_prediction(k_tt, y, k_st, 0.0)
    assert (out.test == 0).all() and torch.allclose(out.train, torch.zeros_like(y), atol=1e-12)


def test_gd_matches_explicit_small_step_descent():
    """Discrete GD on the linearized model, f <- f - lr K (f - y) / y.size, vs the closed form."""
    k_tt, k_st, y = _regression_problem()
    f0_tr, f0_te = 0.5 * _rand(8, 2, seed=14), 0.5 * _rand(5, 2, seed=15)
    m = y.numel()
    lam_max = torch.linalg.eigvalsh(k_tt).max().item()
    # lr * lam_max / m = a per step; per eigenmode |(1 - a)^N - exp(-a N)| <= a / (2e) times the
    # initial residual, so a = 0.0025 keeps the discretization error below ~5e-4 * |f0 - y|.
    lr = 0.0025 * m / lam_max
    steps = (100, 300, 600)
    f_tr, f_te = f0_tr.clone(), f0_te.clone()
    traj_tr, traj_te = {}, {}
    for s in range(1, max(steps) + 1):
        r = f_tr - y
        f_tr, f_te = f_tr - lr * k_tt @ r / m, f_te - lr * k_st @ r / m
        if s in steps:
            traj_tr[s], traj_te[s] = f_tr.clone(), f_te.clone()
    out = gd_mse_prediction(k_tt, y, k_st, list(steps), lr=lr, f0_train=f0_tr, f0_test=f0_te)
    assert out.train.shape == (3, 8, 2) and out.test.shape == (3, 5, 2)
    for i, s in enumerate(steps):
        assert (out.train[i] - traj_tr[s]).abs().max().item() < 1e-3
        assert (out.test[i] - traj_te[s]).abs().max().item() < 1e-3
        # the dynamics really moved: far from both f0 and the converged solution
        assert (traj_tr[s] - f0_tr).abs().max().item() > 0.1
        # a scalar t gives the same as the corresponding entry of a sequence of times
        single = gd_mse_prediction(k_tt, y, k_st, float(s), lr=lr, f0_train=f0_tr, f0_test=f0_te)
        torch.testing.assert_close(single.test, out.test[i], rtol=1e-12, atol=1e-12)
    # no test set
    assert gd_mse_prediction(k_tt, y, None, 1.0).test is None
