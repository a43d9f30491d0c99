"""Schemes in one symmetry class train to the same function (docs/theory.md §1.2, §7.1)."""

import pytest
import torch

import paramlab as pl
from helpers import rel, train

D_IN, D_OUT, WIDTH, BASE = 10, 3, 256, 32


def run(scheme, opt_name, lr, dtype=torch.float64, init_dtype=None, steps=3, **opt_kw):
    torch.manual_seed(0)
    x = torch.randn(16, D_IN, dtype=dtype)
    y = torch.randn(16, D_OUT, dtype=dtype)
    model = pl.mlp(D_IN, D_OUT, WIDTH, depth=3, scheme=scheme, base_width=BASE, activation="tanh", bias_std=0.5,
                   seed=3, dtype=init_dtype or dtype)
    model = model.to(dtype)
    opt = pl.optimizer(model, opt_name, lr=lr, **opt_kw)
    return train(model, opt, x, y, steps)


def test_mf_equals_mup_sgd_float64_init():
    a, b = run("mf", "sgd", 0.05), run("mup", "sgd", 0.05)
    assert rel(a, b) < 1e-8
    assert rel(a[-1], a[0]) > 1e-3  # and training did move the function


def test_mf_equals_mup_sgd_from_float32_init():
    a, b = run("mf", "sgd", 0.05, init_dtype=torch.float32), run("mup", "sgd", 0.05, init_dtype=torch.float32)
    assert rel(a, b) < 1e-6


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mf_equals_mup_sgd_momentum_and_weight_decay(momentum):
    kw = dict(momentum=momentum, weight_decay=1e-2)
    assert rel(run("mf", "sgd", 0.05, **kw), run("mup", "sgd", 0.05, **kw)) < 1e-8


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_mf_equals_mup_adam_with_eps_scaled(name):
    # eps=1e-3 is large enough that an unscaled eps visibly breaks the symmetry (checked below)
    a = run("mf", name, 1e-3, eps=1e-3, weight_decay=1e-2 if name == "adamw" else 0.0)
    b = run("mup", name, 1e-3, eps=1e-3, weight_decay=1e-2 if name == "adamw" else 0.0)
    assert rel(a, b) < 1e-6
    broken = run("mf", name, 1e-3, eps=1e-3, eps_mode="none")
    assert rel(broken, b) > 1e-4  # why eps handling matters


def test_ntk_equals_sp_with_per_layer_sgd_lr():
    # SP with SGD lr (1, 1/m, 1/m) on (input, hidden, output) = NTK (docs/theory.md §2.5)
    sp_lr = pl.custom("sp-lr", input=(0, 0, 0, 0), hidden=(0, .5, 1, 0), output=(0, .5, 1, 0))
    a, b = run("ntk", "sgd", 0.05), run(sp_lr, "sgd", 0.05)
    assert rel(a, b) < 1e-8
    assert rel(run("sp", "sgd", 0.05), b) > 1e-3  # plain SP is a different trajectory


def test_canonical_form_trains_like_the_scheme():
    for s in ("mup", "ntk"):
        assert rel(run(pl.get_scheme(s).canonical(), "sgd", 0.05), run(s, "sgd", 0.05)) < 1e-8
        assert rel(run(pl.get_scheme(s).canonical(), "adam", 1e-3), run(s, "adam", 1e-3)) < 1e-6


def test_lr_scheduler_scales_groups_relatively():
    model = pl.mlp(D_IN, D_OUT, WIDTH, scheme="mup", base_width=BASE)
    opt = pl.optimizer(model, "sgd", lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    before = pl.effective_lrs(opt)
    assert len(set(before.values())) > 1
    opt.step()
    sched.step()
    sched.step()
    after = pl.effective_lrs(opt)
    assert after == pytest.approx({n: lr * 0.25 for n, lr in before.items()})
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.025)  # the base lr; the step applies lr_mult


def test_layer_lr_constants_multiply_per_tensor_lr():
    model = pl.mlp(D_IN, D_OUT, WIDTH, scheme="mup", base_width=BASE)
    lr = pl.effective_lrs(pl.optimizer(model, "sgd", lr=0.1, layer_lr={"readout.*": 0.5, "layers.0.weight": 3.0}))
    m = WIDTH / BASE
    assert lr["readout.weight"] == pytest.approx(0.1 * m * 0.5) and lr["readout.bias"] == pytest.approx(0.05)
    assert lr["layers.0.weight"] == pytest.approx(0.1 * m * 3.0) and lr["layers.1.weight"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="layer_lr"):
        pl.optimizer(model, "sgd", lr=0.1, layer_lr={"readout.*": -1.0})
