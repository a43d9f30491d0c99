"""paramlab's muP against the `mup` package (docs/theory.md §4, §7.2), and roles read from mup."""

import mup
import pytest
import torch
from torch import nn

import paramlab as pl
from helpers import rel, train

D_IN, D_OUT, BASE, WIDTH = 12, 4, 32, 128


class MupMLP(nn.Module):
    """The same MLP set up the mup way: MuReadout head, same parameter names as paramlab.MLP."""

    def __init__(self, width, depth=3, device=None):
        super().__init__()
        dims = [D_IN] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(i, o, device=device) for i, o in zip(dims[:-1], dims[1:]))
        self.act = nn.Tanh()
        self.readout = mup.MuReadout(width, D_OUT, device=device)

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return self.readout(x)


def mup_model(dtype):
    torch.manual_seed(1)
    model = MupMLP(WIDTH).to(dtype)
    mup.set_base_shapes(model, MupMLP(BASE), delta=MupMLP(BASE + 1))
    return model


def pair(dtype):
    ref = mup_model(dtype)
    ours = pl.mlp(D_IN, D_OUT, WIDTH, depth=3, scheme="mup", base_width=BASE, activation="tanh", dtype=dtype)
    ours.load_state_dict(ref.state_dict())  # same initial weights
    return ref, ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_paramlab_mup_trains_like_mup_package(opt, dtype):
    ref, ours = pair(dtype)
    x, y = torch.randn(8, D_IN, dtype=dtype), torch.randn(8, D_OUT, dtype=dtype)
    assert torch.equal(ours(x), ref(x))  # MuReadout's 1/width_mult is paramlab's output multiplier
    lr = 0.1 if opt == "sgd" else 1e-3
    if opt == "sgd":
        opt_ref, opt_ours = mup.MuSGD(ref.parameters(), lr=lr), pl.optimizer(ours, "sgd", lr=lr)
    else:  # mup's MuAdam leaves eps fixed: eps_mode="none" is that convention
        opt_ref, opt_ours = mup.MuAdam(ref.parameters(), lr=lr), pl.optimizer(ours, "adam", lr=lr, eps_mode="none")
    a, b = train(ref, opt_ref, x, y, 3), train(ours, opt_ours, x, y, 3)
    assert rel(b, a) < 1e-6
    assert rel(a[-1], a[0]) > 1e-3


def test_per_tensor_lrs_match_mup_optimizers():
    ref, ours = pair(torch.float32)
    names = {id(p): n for n, p in ref.named_parameters()}
    for mup_opt, name in ((mup.MuSGD, "sgd"), (mup.MuAdam, "adam")):
        want = {names[id(p)]: g["lr"] for g in mup_opt(ref.parameters(), lr=1.0).param_groups for p in g["params"]}
        got = pl.effective_lrs(pl.optimizer(ours, name, lr=1.0))
        assert got == pytest.approx(want), name


def test_roles_from_mup_model_and_bsh_file(tmp_path):
    tags = pl.get_plan(pl.mlp(D_IN, D_OUT, WIDTH, depth=3, base_width=BASE)).tensors
    want = {t.name: (t.role, t.m) for t in tags}

    def plain(width, device=None):
        return pl.MLP(D_IN, D_OUT, width, depth=3, activation_name="tanh", device=device)

    # a .bsh file written by mup itself
    bsh = tmp_path / "base.bsh"
    mup.make_base_shapes(plain(BASE), plain(BASE + 1), savefile=str(bsh))
    from_file = pl.get_plan(pl.parameterize(plain(WIDTH), "mup", base=str(bsh)))
    assert {t.name: (t.role, t.m) for t in from_file} == want
    # a model that mup.set_base_shapes has set up
    ref = mup_model(torch.float32)
    from_mup = pl.get_plan(pl.parameterize(plain(WIDTH), "mup", base=ref))
    assert {t.name: (t.role, t.m) for t in from_mup} == want
    # and paramlab writes a .bsh that mup reads back
    out = tmp_path / "ours.bsh"
    pl.save_bsh(pl.roles.width_dims_from_models(plain(WIDTH), plain(BASE), plain(BASE + 1)), out)
    assert {k: v.base_shape() for k, v in mup.shape.load_base_shapes(str(out)).items()} == \
           {k: v.base_shape() for k, v in mup.shape.load_base_shapes(str(bsh)).items()}
