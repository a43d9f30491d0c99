"""Tests for paramlab.measure.features (feature and weight movement, CKA, alignment, effective rank,
span(U) fraction, the capture hook) and paramlab.measure.limits (TP4 Cor. 6.2)."""

import math

import numpy as np
import pytest
import torch

import paramlab as pl
from paramlab.measure.capture import capture, features
from paramlab.measure.features import (effective_rank, feature_kernel, feature_metrics, kernel_alignment, kernel_change,
                                       linear_cka, rel_change)
from paramlab.measure.weights import spectral_norm, subspace_fraction, weight_change, weight_changes
from paramlab.measure.fit import fit_slope
from paramlab.measure.limits import tp4_linear_limit

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- capture -------------------------------------------------------------------------------------------


def test_capture_names_order_and_cleanup():
    model = pl.mlp(5, 2, 32, depth=2, scheme="mup", base_width=16, activation="tanh")
    x = torch.randn(4, 5)
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    with capture(model) as cap:
        out = model(x)
    assert cap.order == ["layers.0", "act[0]", "layers.1", "act[1]", "readout"]  # shared act: one per call
    assert torch.equal(cap["readout"], out.detach())
    assert torch.allclose(cap["act[1]"], torch.tanh(cap["layers.1"]))
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks  # hooks removed on exit
    with capture(model, ["layers.1"]) as cap:
        model(x)
        model(x)
        assert list(cap) == ["layers.1[0]", "layers.1[1]"]  # calls accumulate until clear()
        cap.clear()
        model(x)
        assert list(cap) == ["layers.1"]
    with pytest.raises(ValueError, match="no module named"):
        with capture(model, ["layers.7"]):
            pass
    # features(): one no-grad pass, optionally at other parameter values
    f = features(model, x, ["layers.0"])
    with torch.no_grad():
        assert torch.equal(f["layers.0"], model.layers[0](x))
    zero = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    assert torch.equal(features(model, x, ["layers.0"], params=zero)["layers.0"], torch.zeros(4, 32))


# -- metrics on constructed cases --------------------------------------------------------------------------


def test_cka_orthogonal_invariance_and_independent_features():
    x = torch.randn(200, 30, generator=gen(), dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen(1), dtype=F64))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-12)  # scale and shift too
    assert linear_cka(x, x @ q, debiased=True) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x[:20], (x @ q)[:20]) == pytest.approx(1.0, abs=1e-12)  # Gram path (p > N)
    # independent random features: CKA ~ sqrt(p q) / N when p, q << N
    a = torch.randn(2000, 10, generator=gen(2), dtype=F64)
    b = torch.randn(2000, 10, generator=gen(3), dtype=F64)
    assert linear_cka(a, b) < 0.02
    # with p >> N plain CKA is biased towards 1; the debiased estimator is not
    a = torch.randn(50, 5000, generator=gen(4), dtype=F64)
    b = torch.randn(50, 5000, generator=gen(5), dtype=F64)
    assert linear_cka(a, b) > 0.8
    assert abs(linear_cka(a, b, debiased=True)) < 0.05
    with pytest.raises(ValueError, match="same number of examples"):
        linear_cka(a, b[:10])


def test_kernel_target_alignment():
    y = torch.randn(40, generator=gen(), dtype=F64)
    assert kernel_alignment(torch.outer(y, y), y) == pytest.approx(1.0)
    assert kernel_alignment(torch.eye(40, dtype=F64), y) == pytest.approx(1 / math.sqrt(40))
    onehot = torch.nn.functional.one_hot(torch.arange(40) % 4).double()
    assert kernel_alignment(onehot @ onehot.T, onehot) == pytest.approx(1.0)
    assert kernel_alignment(onehot @ onehot.T + 5.0, onehot, center=True) == pytest.approx(1.0)  # centering removes the constant
    x = torch.randn(40, 100, generator=gen(1), dtype=F64)
    assert abs(kernel_alignment(feature_kernel(x), y, center=True)) < 0.2
    with pytest.raises(ValueError, match="square"):
        kernel_alignment(x, y)


def test_effective_rank_both_definitions():
    q, _ = torch.linalg.qr(torch.randn(100, 100, generator=gen(), dtype=F64))
    x = q[:, :7] * 3.0  # 7 equal singular values
    for method in ("entropy", "participation"):
        assert effective_rank(x, method) == pytest.approx(7.0)
        assert effective_rank(torch.zeros(5, 3), method) == 0.0
    # unequal spectrum: both between 1 and the rank; participation weighs the top more
    y = q[:, :3] * torch.tensor([10.0, 1.0, 1.0], dtype=F64)
    e, p = effective_rank(y, "entropy"), effective_rank(y, "participation")
    assert 1 < p < e < 3
    s = torch.tensor([10.0, 1.0, 1.0])
    assert e == pytest.approx(math.exp(-sum(float(v / s.sum()) * math.log(float(v / s.sum())) for v in s)))
    assert p == pytest.approx(float((s ** 2).sum() ** 2 / (s ** 4).sum()))
    with pytest.raises(ValueError, match="unknown effective-rank"):
        effective_rank(y, "stable")


def test_span_fraction_inside_and_random():
    d, k, n = 64, 4, 4096
    u, _ = torch.linalg.qr(torch.randn(d, k, generator=gen(), dtype=F64))
    u = u.T  # (k, d) orthonormal rows
    inside = torch.randn(n, k, generator=gen(1), dtype=F64) @ u
    assert subspace_fraction(inside, u) == pytest.approx(1.0, abs=1e-12)
    assert subspace_fraction(inside, 2.0 * u + 0.0) == pytest.approx(1.0, abs=1e-12)  # any basis of the span
    rand = torch.randn(n, d, generator=gen(2), dtype=F64)
    assert subspace_fraction(rand, u) == pytest.approx(k / d, rel=0.05)
    outside = rand - rand @ u.T @ u
    assert subspace_fraction(outside, u) == pytest.approx(0.0, abs=1e-12)


def test_weight_change_spectral_norm_and_feature_metrics():
    w0 = torch.randn(300, 200, generator=gen(), dtype=F64)
    d = torch.randn(300, 2, generator=gen(1), dtype=F64) @ torch.randn(2, 200, generator=gen(2), dtype=F64)
    wc = weight_change(w0, w0 + d)
    assert wc["fro"] == pytest.approx(float(d.norm() / w0.norm()))
    assert wc["spec"] == pytest.approx(float(torch.linalg.matrix_norm(d, ord=2) / torch.linalg.matrix_norm(w0, ord=2)))
    # Lanczos (above exact_max) agrees with the SVD: full-rank and low-rank matrices
    for a in (w0, d, w0 + d):
        assert spectral_norm(a, exact_max=16) == pytest.approx(float(torch.linalg.matrix_norm(a, ord=2)), rel=1e-6)
    assert spectral_norm(torch.tensor([3.0, 4.0])) == pytest.approx(5.0)
    conv = torch.randn(8, 4, 3, generator=gen(3), dtype=F64)  # 2-D view (fan_out, -1)
    assert spectral_norm(conv) == pytest.approx(float(torch.linalg.matrix_norm(conv.reshape(8, 12), ord=2)))
    model = pl.mlp(5, 2, 32, scheme="mup", base_width=16)
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.layers[1].weight.mul_(1.5)
        model.layers[1].bias.add_(1.0)
    ch = weight_changes(p0, model)
    assert ch["layers.1.weight"]["fro"] == pytest.approx(0.5) and ch["layers.1.weight"]["spec"] == pytest.approx(0.5)
    assert ch["layers.1.bias"] == {"fro_abs": pytest.approx(math.sqrt(32)), "spec_abs": pytest.approx(math.sqrt(32))}
    assert ch["readout.weight"]["fro"] == 0.0
    # feature metrics: a feature that does not move
    f0 = {"h": torch.randn(20, 50, generator=gen(4), dtype=F64)}
    m = feature_metrics(f0, {"h": f0["h"].clone()}, y=torch.randn(20, dtype=F64))
    assert m["h"]["rel_change"] == 0.0 and m["h"]["kernel_change"] == 0.0 and m["h"]["cka"] == pytest.approx(1.0)
    assert m["h"]["erank_0"] == m["h"]["erank_t"] and m["h"]["align_0"] == m["h"]["align_t"]
    assert rel_change(2 * f0["h"], f0["h"]) == pytest.approx(1.0)
    assert kernel_change(f0["h"], 2 * f0["h"]) == pytest.approx(3.0)


# -- feature movement vs width: THEORY.md §3.3 / DESIGN.md experiment feature_learning ---------------------


@pytest.mark.slow
def test_feature_movement_after_ten_steps_falls_for_ntk_and_not_for_mup():
    """10 full-batch SGD steps (lr 0.1) on a 2-index teacher, tanh MLP, widths 128..2048, 4 seeds:
    the hidden preactivation's relative change falls like n^(-1/2) under NTK, is flat under muP;
    the feature kernel's change falls with slope <= -1/2 under NTK (THEORY.md §7.4)."""
    d, widths = 16, [128, 256, 512, 1024, 2048]
    g = gen(0)
    u = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=F64))[0].T
    x = torch.randn(64, d, generator=g, dtype=F64)
    y = 3 * torch.tanh(x @ u.T).prod(-1, keepdim=True)
    probe = torch.randn(128, d, generator=g, dtype=F64)
    slopes = {}
    for scheme in ("ntk", "mup"):
        r, k = [], []
        for w in widths:
            rr, kk = [], []
            for seed in range(4):
                model = pl.mlp(d, 1, w, depth=2, scheme=scheme, base_width=64, activation="tanh", seed=seed, dtype=F64)
                f0 = features(model, probe, ["layers.1"])
                opt = pl.optimizer(model, "sgd", lr=0.1)
                for _ in range(10):
                    opt.zero_grad()
                    (0.5 * (model(x) - y).square().sum(-1).mean()).backward()
                    opt.step()
                met = feature_metrics(f0, features(model, probe, ["layers.1"]))["layers.1"]
                rr.append(met["rel_change"])
                kk.append(met["kernel_change"])
            r.append(rr)
            k.append(kk)
        slopes[scheme] = (fit_slope(widths, r)[0], fit_slope(widths, k)[0])
    assert abs(slopes["ntk"][0] + 0.5) <= 0.15, slopes
    assert abs(slopes["mup"][0]) < 0.15, slopes
    assert slopes["ntk"][1] <= -0.5, slopes


# -- exact limit: TP4 Cor. 6.2 -------------------------------------------------------------------------------

XIS = [1.0, -0.7, 1.3, 0.5, -1.2, 0.9]
YS = [1.0, -0.5, 0.8, 0.3, -1.0, 0.6]
ETA = 0.5


def test_tp4_recursion_first_step_and_monte_carlo():
    f = tp4_linear_limit(XIS, YS, ETA, 6)
    assert f[0] == 0.0
    assert f[1] == pytest.approx(2 * ETA * YS[0] * XIS[0])  # chi_0 = -y_0: f_1 = 2 eta y_0 xi_0 xi
    assert tp4_linear_limit(XIS, YS, ETA, 6, xi_eval=[2.0, -1.0]).shape == (7, 2)
    # the general Z-recursion of TP4 Thm 6.1 (linear phi), by Monte Carlo over (Z^{nV_0}, Z^{U_0})
    rng = np.random.default_rng(0)
    zv, zu = rng.standard_normal(2_000_000), rng.standard_normal(2_000_000)
    mc = [float(np.mean(zv * zu))]
    for t in range(6):
        chi = mc[-1] * XIS[t] - YS[t]
        zv, zu = zv - ETA * chi * XIS[t] * zu, zu - ETA * chi * XIS[t] * zv
        mc.append(float(np.mean(zv * zu)))
    assert np.allclose(mc, f, atol=0.01)


def make_linear_mup(width, seed):
    """paramlab mup, one hidden linear layer, d = k = 1, no bias, base width 1: TP4's normalization."""

    def make(w, device=None):
        return pl.MLP(1, 1, w, depth=1, activation_name="linear", bias=False, device=device, dtype=F64)

    return pl.parameterize(make(width), "mup", base=make(1, "meta"), delta=make(3, "meta"), gain=1.0,
                           readout_gain=1.0, seed=seed)


def finite_run(width, seed):
    model = make_linear_mup(width, seed)
    opt = pl.optimizer(model, "sgd", lr=ETA)
    one = torch.ones(1, 1, dtype=F64)
    out = []
    for t in range(6):
        with torch.no_grad():
            out.append(float(model(one)))
        opt.zero_grad()
        (0.5 * (model(torch.tensor([[XIS[t]]], dtype=F64)) - YS[t]).square().sum()).backward()
        opt.step()
    with torch.no_grad():
        out.append(float(model(one)))
    return np.array(out)


def test_mup_form_matches_tp4_normalization():
    model = make_linear_mup(256, 0)
    plan = pl.get_plan(model)
    u, v = plan["layers.0.weight"], plan["readout.weight"]
    assert (u.init_std, u.mult, u.lr_mult("sgd")) == (1.0, 1.0, 256.0)  # Z^U ~ N(0,1), lr eta * n
    assert (v.init_std, v.mult, v.lr_mult("sgd")) == (1.0, 1 / 256, 256.0)  # n V ~ N(0,1), step eta / n


@pytest.mark.slow
def test_finite_linear_mup_net_converges_to_tp4_limit_like_n_to_minus_half():
    """max_t<=6 |f_t - f_t^inf| averaged over 32 seeds, widths 64..16384: slope -1/2 (THEORY.md §3.2)."""
    widths = [64, 256, 1024, 4096, 16384]
    lim = tp4_linear_limit(XIS, YS, ETA, 6)
    errs = np.array([[np.abs(finite_run(w, s) - lim).max() for s in range(32)] for w in widths])
    slope = fit_slope(widths, errs.mean(1))[0]
    assert abs(slope + 0.5) <= 0.15, (slope, errs.mean(1))
    assert errs.mean(1)[-1] < 0.02


def test_spectral_norm_in_k_lanczos_steps_is_a_lower_bound_within_its_stated_error():
    """steps=k: a Ritz value (never above the norm), within 2.5% at k = 20 (the stated bound) on a
    Gaussian matrix (clustered top of the spectrum, the hard case without a gap), a low-rank update and
    their sum; exact when the side is <= k. Control: k = 2 misses the Gaussian's norm by more than 2.5%."""
    n = 600
    gauss = torch.randn(n, n, generator=gen(4)) / n ** 0.5
    low = torch.randn(n, 8, generator=gen(5)) @ torch.randn(8, n, generator=gen(6)) / n
    for a in (gauss, low, gauss + low, (gauss + low).double(), (gauss + low).T[:, :400]):
        exact = float(torch.linalg.matrix_norm(a.double(), ord=2))
        est = spectral_norm(a, exact_max=16, steps=20)
        assert est <= exact * (1 + 1e-5)  # float32 Lanczos: a lower bound up to rounding
        assert est >= exact * (1 - 0.025)
    small = torch.randn(200, 12, generator=gen(7), dtype=F64)
    assert spectral_norm(small, exact_max=4, steps=20) == pytest.approx(
        float(torch.linalg.matrix_norm(small, ord=2)), rel=1e-10)  # 12 <= 20 steps: the whole Krylov space
    assert spectral_norm(torch.zeros(100, 100), exact_max=4, steps=20) == 0.0
    exact = float(torch.linalg.matrix_norm(gauss.double(), ord=2))
    assert spectral_norm(gauss, exact_max=16, steps=2) < exact * (1 - 0.025)
