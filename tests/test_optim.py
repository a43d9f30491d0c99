"""paramlab.optim: per-tensor lr, weight decay and Adam eps from the plan, checked against the scheme
tables by hand (lr * m^-c, wd * m^c, eps * m^-(a + g))."""

import math

import pytest
import torch

import paramlab as pl
from paramlab.optim import param_groups

WIDTH, BASE = 256, 64
M = WIDTH / BASE


def model(scheme="mup"):
    return pl.mlp(8, 3, WIDTH, depth=2, scheme=scheme, base_width=BASE, seed=0)


def per_tensor(groups, key):
    return {n: g[key] for g in groups for n in g["names"]}


@pytest.mark.parametrize("scheme", ["sp", "ntk", "mf", "mup"])
@pytest.mark.parametrize("family", ["sgd", "adam"])
def test_lr_is_base_lr_times_m_to_the_minus_c(scheme, family):
    s = pl.get_scheme(scheme)
    lrs = per_tensor(param_groups(model(scheme), family, lr=0.1), "lr")
    roles = {"layers.0.weight": "input", "layers.1.weight": "hidden", "readout.weight": "output",
             "layers.0.bias": "vector", "readout.bias": "scalar"}
    for name, role in roles.items():
        m = 1.0 if role == "scalar" else M
        c = s[role].c_adam if family == "adam" else s[role].c_sgd
        assert lrs[name] == pytest.approx(0.1 * m ** -c, rel=1e-12), (name, role)


def test_weight_decay_keeps_lr_times_wd_width_free_and_adam_eps_moves_with_the_gradient():
    s = pl.get_scheme("mup")
    groups = param_groups(model(), "adam", lr=1e-3, weight_decay=0.1, eps=1e-8)
    lr, wd, eps = (per_tensor(groups, k) for k in ("lr", "weight_decay", "eps"))
    for n in lr:
        assert lr[n] * wd[n] == pytest.approx(1e-3 * 0.1, rel=1e-12)
    g = s["output"].a + s["output"].b  # the backward signal's exponent: the readout's effective init std
    assert eps["layers.1.weight"] == pytest.approx(1e-8 * M ** -(s["hidden"].a + g))
    assert eps["readout.weight"] == pytest.approx(1e-8 * M ** -s["output"].a)
    fixed = per_tensor(param_groups(model(), "adam", lr=1e-3, eps=1e-8, eps_mode="none"), "eps")
    assert set(fixed.values()) == {1e-8}


def test_layer_lr_patterns_exact_names_win_and_groups_merge():
    groups = param_groups(model("sp"), "sgd", lr=0.1, layer_lr={"layers.*": 2.0, "layers.1.weight": 5.0})
    lr = per_tensor(groups, "lr")
    assert lr["layers.0.weight"] == pytest.approx(0.2) and lr["layers.1.weight"] == pytest.approx(0.5)
    assert lr["readout.weight"] == pytest.approx(0.1)
    assert len(groups) == 3  # SP: one lr per constant, tensors with equal hyperparameters share a group


def test_torch_optimizers_and_errors():
    m = model()
    opt = pl.optimizer(m, "adamw", lr=1e-3, weight_decay=0.01, betas=(0.8, 0.9))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.9)
    assert isinstance(pl.optimizer(m, "sgd", lr=0.1, momentum=0.9), torch.optim.SGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        pl.optimizer(m, "lion")
    with pytest.raises(ValueError, match="lr must be positive"):
        pl.optimizer(m, "sgd", lr=0.0)
    with pytest.raises(TypeError, match="finite"):
        pl.optimizer(m, "sgd", lr=math.nan)
    with pytest.raises(ValueError, match="no paramlab plan"):
        pl.optimizer(torch.nn.Linear(2, 2), "sgd", lr=0.1)
    m.extra = torch.nn.Linear(2, 2)  # added after parameterize: not in the plan
    with pytest.raises(ValueError, match="not in the model's plan"):
        pl.optimizer(m, "sgd", lr=0.1)
