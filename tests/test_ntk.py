"""Tests for paramlab.measure.ntk: the empirical NTK against a naive per-example autograd loop, the
NTK-vector products, chunking, the LR / NT weightings, and the analytic NTK at large width."""

import math

import pytest
import torch
from torch import nn

import paramlab as pl
from paramlab.measure.ntk import empirical_ntk, ntk_change, ntk_naive, ntk_vp, ntk_weights, nt_weights
from paramlab.schemes import PRESETS

F64 = torch.float64
PRESET_NAMES = list(PRESETS)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def mlp(scheme, width=48, base_width=16, **kw):
    kw = {"depth": 2, "activation": "tanh", "bias_std": 0.1, "seed": 3, "dtype": F64, **kw}
    return pl.mlp(5, 3, width, scheme=scheme, base_width=base_width, **kw)


class SmallCNN(nn.Module):
    """(B, 3, L) -> conv -> relu -> conv -> tanh -> mean over L -> linear -> (B, 2)."""

    def __init__(self, width, device=None, dtype=F64):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.conv1 = nn.Conv1d(3, width, 3, padding=1, **kw)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1, **kw)
        self.head = nn.Linear(width, 2, **kw)

    def forward(self, x):
        h = torch.tanh(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean(-1))


def check_all_modes(model, x, x2=None, methods=("jacobian", "ntvp")):
    ref = ntk_naive(model, x, x2)  # (N1, N2, K, K)
    diag = torch.diagonal(ref, dim1=-2, dim2=-1)
    for method in methods:
        assert rel(empirical_ntk(model, x, x2, method=method), ref) < 1e-5, method
        assert rel(empirical_ntk(model, x, x2, mode="trace", method=method), diag.mean(-1)) < 1e-5, method
        assert rel(empirical_ntk(model, x, x2, mode="diagonal", method=method), diag) < 1e-5, method
    if x2 is None:
        idx = torch.arange(x.shape[0])
        for method in methods:
            assert rel(empirical_ntk(model, x, pairs=True, method=method), ref[idx, idx]) < 1e-5, method
            assert rel(empirical_ntk(model, x, pairs=True, mode="trace", method=method), diag[idx, idx].mean(-1)) < 1e-5


@pytest.mark.parametrize("scheme", PRESET_NAMES)
def test_entk_equals_naive_loop_mlp_with_multipliers(scheme):
    model = mlp(scheme)  # width 48 from base 16: multipliers m^-a != 1 under ntk, mf, mup
    if scheme in ("ntk", "mf", "mup"):
        assert any(t.mult != 1.0 for t in pl.get_plan(model))
    x = torch.randn(6, 5, dtype=F64)
    methods = ("jacobian", "ntvp", "layerwise")
    check_all_modes(model, x, methods=methods)
    check_all_modes(model, x, torch.randn(4, 5, dtype=F64), methods=methods)
    lr = empirical_ntk(model, x, weights="lr", method="layerwise")
    assert rel(lr, empirical_ntk(model, x, weights="lr", method="jacobian")) < 1e-10


@pytest.mark.parametrize("scheme", PRESET_NAMES)
def test_entk_equals_naive_loop_small_cnn(scheme):
    model = pl.parameterize(SmallCNN(24), scheme, base=SmallCNN(8, device="meta"), bias_std=0.1, seed=1)
    plan = pl.get_plan(model)
    assert {t.name: t.role for t in plan}["conv2.weight"] == "hidden"
    x = torch.randn(5, 3, 7, dtype=F64)
    methods = ("jacobian", "ntvp", "layerwise")  # layerwise: per-example conv gradients from unfold
    check_all_modes(model, x, methods=methods)
    check_all_modes(model, x, torch.randn(3, 3, 7, dtype=F64), methods=methods)


def test_ntk_vector_products_equal_full_kernel_times_v():
    model = mlp("mup")
    x1, x2 = torch.randn(7, 5, dtype=F64), torch.randn(5, 5, dtype=F64)
    for weights in (None, "lr"):
        full = empirical_ntk(model, x1, x2, weights=weights)  # (7, 5, 3, 3)
        v = torch.randn(5, 3, dtype=F64)
        expect = torch.einsum("abkl,bl->ak", full, v)
        for cs in (None, 2):
            assert rel(ntk_vp(model, x1, v, x2, weights=weights, chunk_size=cs), expect) < 1e-10
    # x2 = x1 by default
    full = empirical_ntk(model, x1)
    v = torch.randn(7, 3, dtype=F64)
    assert rel(ntk_vp(model, x1, v), torch.einsum("abkl,bl->ak", full, v)) < 1e-10


def test_chunking_gives_identical_results():
    model = mlp("ntk")
    x1, x2 = torch.randn(9, 5, dtype=F64), torch.randn(4, 5, dtype=F64)
    for method in ("jacobian", "ntvp"):
        for mode in ("full", "trace", "diagonal"):
            ref = empirical_ntk(model, x1, mode=mode, method=method)
            ref12 = empirical_ntk(model, x1, x2, mode=mode, method=method)
            for cs in (1, 2, 4, 100):
                assert torch.allclose(empirical_ntk(model, x1, mode=mode, method=method, chunk_size=cs), ref,
                                      rtol=1e-12, atol=1e-14), (method, mode, cs)
                assert torch.allclose(empirical_ntk(model, x1, x2, mode=mode, method=method, chunk_size=cs), ref12,
                                      rtol=1e-12, atol=1e-14), (method, mode, cs)
    # a memory budget that forces one example per chunk gives the same kernel
    assert torch.allclose(empirical_ntk(model, x1, max_memory=1), empirical_ntk(model, x1), rtol=1e-12, atol=1e-14)
    # the symmetric kernel is symmetric
    full = empirical_ntk(model, x1, chunk_size=2)
    assert torch.allclose(full, full.permute(1, 0, 3, 2), atol=1e-13)


def test_lr_weighted_and_dict_weighted_kernels():
    model = mlp("mup", width=64, base_width=16)
    x = torch.randn(4, 5, dtype=F64)
    w = ntk_weights(model, "lr")
    plan = pl.get_plan(model)
    assert w == {t.name: t.lr_mult("sgd") for t in plan}
    assert w["layers.0.weight"] == pytest.approx(4.0) and w["layers.1.weight"] == 1.0  # muP SGD: m, 1, m
    ref = ntk_naive(model, x, weights="lr")
    assert rel(empirical_ntk(model, x, weights="lr"), ref) < 1e-10
    # by hand: sum over tensors of lr_mult * J J^T
    parts = {n: empirical_ntk(model, x, weights={m: (1.0 if m == n else 0.0) for m in w}) for n in w}
    assert rel(sum(w[n] * parts[n] for n in w), ref) < 1e-10
    adam = ntk_weights(model, "lr", optimizer="adam")
    assert adam["layers.1.weight"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown tensors"):
        empirical_ntk(model, x, weights={"nope": 1.0})


def test_nt_weights_are_width_independent_for_the_ntk_scheme():
    """w_l = (W_std^2 / fan_in) / mult^2 = init_std^2: constants per layer, not growing with width."""
    ws = {}
    for width in (64, 256, 1024):
        m = mlp("ntk", width=width, base_width=64, gain=1.3, readout_gain=0.7)
        w = nt_weights(m, b_std=0.5)
        plan = pl.get_plan(m)
        for name, t in ((t.name, t) for t in plan if len(t.shape) == 2):
            assert w[name] == pytest.approx(t.init_std ** 2)  # the NT network with the same init
        ws[width] = w
    for name in ws[64]:
        assert ws[1024][name] == pytest.approx(ws[64][name]), name
    assert ws[64]["layers.1.weight"] == pytest.approx(1.3 ** 2 / 64)
    assert ws[64]["readout.weight"] == pytest.approx(0.7 ** 2 / 64)
    assert ws[64]["layers.0.weight"] == pytest.approx(1.3 ** 2 / 5)
    assert ws[64]["layers.1.bias"] == pytest.approx(0.25)
    assert nt_weights(mlp("ntk"))["layers.1.bias"] == 0.0  # b_std=None: no bias in the NT kernel


def test_ntk_change_between_checkpoints():
    model = mlp("ntk", width=64)
    x = torch.randn(5, 5, dtype=F64)
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert ntk_change(model, p0, x) == 0.0
    opt = pl.optimizer(model, "sgd", lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    k0 = empirical_ntk(model, x, mode="trace", params=p0)
    kt = empirical_ntk(model, x, mode="trace")
    change = ntk_change(p0, model, x)
    assert change == pytest.approx(float((kt - k0).norm() / k0.norm()), rel=1e-12)
    assert change > 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert ntk_change(p0, state, x, model=model) == pytest.approx(change, rel=1e-12)


@pytest.mark.slow
def test_entk_of_wide_ntk_relu_mlp_matches_analytic_ntk():
    """paramlab's ntk scheme at width 4096, NT-convention weights: within 5% of the analytic NTK
    (relative Frobenius, trace over outputs, mean over 4 seeds). docs/theory.md §6.4, §7.6."""
    kernels = pytest.importorskip("paramlab.measure.kernels")
    gain = math.sqrt(2.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, generator=g)

    def make(width, device=None):  # bias-free MLP (NT's b_std=None); gain = readout gain = W_std
        return pl.MLP(8, 1, width, depth, "relu", bias=False, device=device)

    for depth in (1, 2):
        ref = kernels.MLPKernel(depth, "relu", W_std=gain).ntk(x.double())
        ks = []
        for seed in range(4):
            model = pl.parameterize(make(4096), "ntk", base=make(64, "meta"), gain=gain, readout_gain=gain, seed=seed)
            ks.append(empirical_ntk(model, x, mode="trace", weights="nt").double())
        err = rel(torch.stack(ks).mean(0), ref)
        assert err < 0.05, (depth, err)
