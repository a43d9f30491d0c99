"""Tests for paramlab.models.cnn: one network at the base width, width-stable activations under muP
(coordinate check), growth under SP, roles of convs and norms, inputs, any user CNN."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import paramlab as pl
from helpers import activation_sizes, max_ratio
from helpers import slopes as _slopes
from paramlab.models.cnn import CNN, cnn
from paramlab.schemes import PRESETS

PRESET_NAMES = list(PRESETS)
CONFIGS = {  # (kwargs, input shape)
    "1d": (dict(dim=1, depth=3), (6, 1, 40)),
    "2d-residual-group": (dict(dim=2, depth=3, residual=True, norm="group", norm_groups=4), (6, 1, 8, 8)),
    "1d-layer": (dict(dim=1, depth=2, norm="layer", bias_std=0.1), (6, 1, 40)),
    "2d-batch": (dict(dim=2, depth=2, norm="batch", kernel_size=5), (6, 1, 8, 8)),
}


def _lrs(model, opt):
    return pl.effective_lrs(pl.optimizer(model, opt, lr=0.1))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_base_width_all_presets_are_one_network(config):
    kw, shape = CONFIGS[config]
    x = torch.randn(*shape)
    models = {s: cnn(1, 10, 16, scheme=s, base_width=16, seed=3, **kw) for s in PRESET_NAMES}
    ref = models["sp"]
    ref_sd = {k: v.clone() for k, v in ref.state_dict().items()}  # before any forward updates batch-norm stats
    for s, m in models.items():
        for k, v in m.state_dict().items():
            assert torch.equal(v, ref_sd[k]), (s, k)  # bit-identical weights (and norm buffers)
    for s, m in models.items():
        assert torch.equal(m(x), ref(x)), s  # identical outputs (train mode: batch norm uses batch stats)
        for opt in ("sgd", "adam"):
            assert _lrs(m, opt) == _lrs(ref, opt) and set(_lrs(m, opt).values()) == {0.1}, (s, opt)
        assert all(t.mult == 1.0 for t in pl.get_plan(m))


def test_roles_and_role_table():
    model = cnn(1, 10, 64, depth=3, dim=2, scheme="mup", base_width=16, norm="layer", residual=True)
    roles = {t.name: t.role for t in pl.get_plan(model)}
    assert roles["blocks.0.conv.weight"] == "input"
    assert roles["blocks.1.conv.weight"] == roles["blocks.2.conv.weight"] == "hidden"
    assert roles["readout.weight"] == "output" and roles["readout.bias"] == "scalar"
    vectors = [n for n in roles if ".bias" in n and "readout" not in n or ".norm." in n]
    assert vectors and all(roles[n] == "vector" for n in vectors)
    assert roles["blocks.1.norm.ln.weight"] == "vector"
    plan = pl.get_plan(model)
    # kernel size is fixed, so the width multiplier is the channel ratio and fan_in includes the kernel
    assert plan["blocks.1.conv.weight"].m == 4
    assert plan["blocks.1.conv.weight"].init_std == pytest.approx(math.sqrt(2) / math.sqrt(16 * 9) / 2)
    for norm in ("group", "batch"):
        m = cnn(1, 10, 64, depth=2, scheme="mup", base_width=16, norm=norm)
        assert pl.get_plan(m)["blocks.1.norm.weight"].role == "vector"
    table = pl.role_table(model, "adam")
    print(table)
    for col in ("name", "shape", "role", "c_adam", "init std", "lr mult"):
        assert col in table
    assert "blocks.1.conv.weight" in table and "64x64x3x3" in table


def test_inputs_mnist1d_and_digits_shapes():
    m1 = cnn(1, 10, 32, dim=1, base_width=16)
    assert m1(torch.randn(5, 40)).shape == m1(torch.randn(5, 1, 40)).shape == (5, 10)  # mnist1d (B, 40)
    m2 = cnn(1, 10, 32, dim=2, base_width=16)
    assert m2(torch.randn(5, 8, 8)).shape == m2(torch.randn(5, 1, 8, 8)).shape == (5, 10)  # digits
    with pytest.raises(ValueError, match=r"expects \(B, C, H, W\)"):
        m2(torch.randn(5, 64))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown norm"):
        cnn(1, 10, 32, norm="instance")
    with pytest.raises(ValueError, match="dim must be 1"):
        cnn(1, 10, 32, dim=3)
    with pytest.raises(ValueError, match="divisible by 8"):
        cnn(1, 10, 36, norm="group", base_width=16)
    with pytest.raises(ValueError, match="positive int"):
        cnn(1, 10, 0)


@pytest.mark.parametrize("scheme", PRESET_NAMES)
def test_trains_on_sklearn_digits(scheme):
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.images[:256] / 16.0, dtype=torch.float32)  # (B, 8, 8): the channel dim is added
    y = torch.tensor(d.target[:256])
    model = cnn(1, 10, 32, depth=2, dim=2, scheme=scheme, base_width=16, seed=0)
    opt = pl.optimizer(model, "adam", lr=3e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], (scheme, losses[0], losses[-1])


# -- coordinate check --------------------------------------------------------------------------------

WIDTHS = [32, 64, 128, 256]


def coord_check(scheme, opt_name, lr, **kw):
    """name -> (n_widths, steps + 1) array of activation RMS."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 40, generator=g), torch.randint(0, 10, (32,), generator=g)
    return activation_sizes(lambda w: cnn(1, 10, w, depth=3, dim=1, scheme=scheme, base_width=WIDTHS[0], seed=1, **kw),
                            WIDTHS, x, y, opt_name, lr, "xent")


def slopes(v):
    return _slopes(WIDTHS, v)


# LRs large enough that SP's growth shows within 3 steps at these widths. muP runs use a zero-initialized
# readout (TP5 and the mup README): a random muP readout makes the logits at init shrink like 1/sqrt(width),
# a transient that hides nothing but is not Theta(1).
@pytest.mark.parametrize("opt_name,lr,arch", [("adam", 1e-2, {}), ("sgd", 0.5, {}),
                                              ("adam", 1e-2, dict(residual=True, norm="group"))])
def test_coord_check_mup_flat_sp_grows(opt_name, lr, arch):
    mup = coord_check("mup", opt_name, lr, readout_zero_init=True, **arch)
    ratios = {n: max_ratio(v) for n, v in mup.items()}
    print("mup max ratio vs base width:", {n: round(r, 3) for n, r in ratios.items()})
    assert all(r <= 1.5 for r in ratios.values()), ratios
    sp = coord_check("sp", opt_name, lr, **arch)
    sp_slopes = {n: max(slopes(v)) for n, v in sp.items()}
    print("sp max slope over steps:", {n: round(s, 2) for n, s in sp_slopes.items()})
    assert max(sp_slopes.values()) > 0.3, sp_slopes
    assert sp_slopes["readout"] > 0.3  # the logits, in particular


# -- any user CNN ------------------------------------------------------------------------------------


class UserCNN(nn.Module):
    """Written here, not by paramlab: conv stem, group norm, a hidden conv, pooling, linear head."""

    def __init__(self, width, device=None):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, device=device)
        self.norm = nn.GroupNorm(4, width, device=device)
        self.conv = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False, device=device)
        self.head = nn.Linear(2 * width, 10, device=device)

    def forward(self, x):  # (B, 1, 8, 8) -> (B, 10)
        h = torch.relu(self.norm(self.stem(x)))
        return self.head(torch.relu(self.conv(h)).mean((2, 3)))


def test_parameterize_a_user_cnn_with_meta_base():
    model = pl.parameterize(UserCNN(64), "mf", base=UserCNN(16, device="meta"), seed=0)
    roles = {t.name: t.role for t in pl.get_plan(model)}
    assert roles == {"stem.weight": "input", "stem.bias": "vector", "norm.weight": "vector", "norm.bias": "vector",
                     "conv.weight": "hidden", "head.weight": "output", "head.bias": "scalar"}
    plan = pl.get_plan(model)
    assert plan["conv.weight"].mult == pytest.approx(0.5) and plan["head.weight"].mult == pytest.approx(0.25)
    print(pl.role_table(model))
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 10)
    opt = pl.optimizer(model, "sgd", lr=0.1)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()
    opt.step()
    # same network as the builder's scheme rules would give at the base width
    base = pl.parameterize(UserCNN(16), "mup", base=UserCNN(16, device="meta"), delta=UserCNN(24, device="meta"))
    assert all(t.mult == 1.0 and t.lr_mult("sgd") == 1.0 for t in pl.get_plan(base))


def test_cnn_class_is_a_plain_module_too():
    net = CNN(1, 10, 8, depth=2, dim=1)
    assert net(torch.randn(2, 40)).shape == (2, 10)
    assert set(net.role_tags()) == {n for n, _ in net.named_parameters()}
