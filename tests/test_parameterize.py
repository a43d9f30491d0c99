import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

import paramlab as pl
from paramlab.schemes import PRESETS

PRESET_NAMES = list(PRESETS)


def build(scheme, width=96, base_width=96, **kw):
    kw = {"depth": 3, "bias_std": 0.1, "seed": 7, **kw}
    return pl.mlp(12, 5, width, scheme=scheme, base_width=base_width, **kw)


def test_base_width_all_presets_are_one_network():
    x = torch.randn(8, 12)
    models = {s: build(s) for s in PRESET_NAMES}
    ref = models["sp"]
    ref_sd = ref.state_dict()
    for s, m in models.items():
        for k, v in m.state_dict().items():
            assert torch.equal(v, ref_sd[k]), (s, k)  # bit-identical weights
        assert torch.equal(m(x), ref(x)), s  # identical outputs
        for opt in ("sgd", "adam"):
            lrs = pl.effective_lrs(pl.optimizer(m, opt, lr=0.1))
            assert set(lrs.values()) == {0.1}, (s, opt, lrs)
        eps = {g["eps"] for g in pl.optimizer(m, "adam", lr=0.1, eps=1e-8).param_groups}
        assert eps == {1e-8}
        assert all(t.mult == 1.0 for t in pl.get_plan(m))


class UserNet(nn.Module):
    """A module written here, not by paramlab: embedding, layer norm, linear layers, a conv."""

    def __init__(self, width, device=None):
        super().__init__()
        self.emb = nn.Embedding(20, width, device=device)
        self.norm = nn.LayerNorm(width, device=device)
        self.conv = nn.Conv1d(width, width, 3, padding=1, device=device)
        self.mid = nn.Linear(width, 2 * width, device=device)
        self.head = nn.Linear(2 * width, 7, device=device)

    def forward(self, tok):  # tok (B, T) -> (B, 7)
        h = self.norm(self.emb(tok))  # (B, T, w)
        h = torch.relu(self.conv(h.transpose(1, 2))).mean(-1)  # (B, w)
        return self.head(torch.relu(self.mid(h)))


USER_ROLES = {"emb.weight": "input", "norm.weight": "vector", "norm.bias": "vector", "conv.weight": "hidden",
              "conv.bias": "vector", "mid.weight": "hidden", "mid.bias": "vector", "head.weight": "output",
              "head.bias": "scalar"}


def test_roles_from_base_model_any_module_and_role_table():
    model = pl.parameterize(UserNet(64), "mup", base=UserNet(16, device="meta"))
    plan = pl.get_plan(model)
    assert {t.name: t.role for t in plan} == USER_ROLES
    assert plan["mid.weight"].m == 4 and plan["head.weight"].mult == pytest.approx(0.25)
    assert plan["conv.weight"].init_std == pytest.approx(1 / math.sqrt(16 * 3) / 2)  # fan_in incl. kernel
    table = pl.role_table(model, "adam")
    for col in ("name", "shape", "role", "a", "b", "c_adam", "init std", "lr mult"):
        assert col in table
    assert "emb.weight" in table and "20x64" in table
    assert model(torch.randint(0, 20, (3, 5))).shape == (3, 7)


def test_base_width_model_needs_delta():
    with pytest.raises(ValueError, match="delta="):
        pl.parameterize(UserNet(16), "mup", base=UserNet(16, device="meta"))
    m = pl.parameterize(UserNet(16), "mup", base=UserNet(16, device="meta"), delta=UserNet(32, device="meta"))
    assert {t.name: t.role for t in pl.get_plan(m)} == USER_ROLES


def test_width_below_base_is_legal():
    m = build("mup", width=32, base_width=128)
    assert pl.get_plan(m)["layers.1.weight"].m == 0.25
    assert torch.isfinite(m(torch.randn(2, 12))).all()


def test_schemes_differ_only_in_extrapolation_with_width():
    # muP's readout effective std falls like 1/m, SP's like 1/sqrt(m) (a + b of the output role)
    for s, p in (("mup", 1.0), ("sp", 0.5), ("ntk", 0.5), ("mf", 1.0)):
        t = pl.get_plan(build(s, width=384, base_width=96))["readout.weight"]
        assert t.init_std * t.mult == pytest.approx(1 / math.sqrt(96) * 4 ** -p)


# -- compatibility: metadata lives in the plan, not on Parameters ----------------------------------


def outputs_and_grads(model, x):
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("scheme", ["mf", "mup", "ntk"])
def test_deepcopy_and_state_dict_roundtrip(scheme, tmp_path):
    x = torch.randn(4, 12)
    model = build(scheme, width=128, base_width=32)
    out, grads = outputs_and_grads(model, x)
    clone = copy.deepcopy(model)
    assert pl.get_plan(clone) == pl.get_plan(model)
    out2, grads2 = outputs_and_grads(clone, x)
    assert torch.equal(out, out2) and all(torch.equal(grads[k], grads2[k]) for k in grads)
    # the copy trains on its own: the original does not move
    opt = pl.optimizer(clone, "sgd", lr=0.1)
    opt.step()
    assert torch.equal(model(x), out)

    path = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), path)
    fresh = build(scheme, width=128, base_width=32, seed=99)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh(x), out)
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # no extra keys


def test_functional_call_vmap_jacrev():
    x = torch.randn(6, 12, dtype=torch.float64)
    model = build("mf", width=64, base_width=16, dtype=torch.float64)  # multipliers on hidden and readout
    params = {k: v.detach() for k, v in model.named_parameters()}
    assert torch.equal(functional_call(model, params, (x,)), model(x))
    # the multiplier acts on the parameters passed in, not on the module's own tensors
    doubled = {k: 2 * v if k == "readout.weight" else v for k, v in params.items()}
    ref = model(x) + (functional_call(model, doubled, (x,)) - model(x))
    assert torch.allclose(functional_call(model, doubled, (x,)), ref)
    per_ex = vmap(lambda xi: functional_call(model, params, (xi[None],))[0])(x)
    assert torch.allclose(per_ex, model(x), atol=1e-12)
    # jacrev of sum of outputs = autograd gradient, multipliers included
    jac = jacrev(lambda p: functional_call(model, p, (x,)).sum())(params)
    _, grads = outputs_and_grads(model, x)
    sum_grads = {n: p.grad for n, p in model.named_parameters()}
    model.zero_grad()
    model(x).sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(jac[n], p.grad, atol=1e-12), n
    assert grads.keys() == sum_grads.keys()


def test_torch_compile_matches_eager():
    x = torch.randn(4, 12)
    model = build("mup", width=64, base_width=16)
    out, grads = outputs_and_grads(model, x)
    compiled = torch.compile(model)
    model.zero_grad()
    out_c = compiled(x)
    out_c.square().sum().backward()
    grads_c = {n: p.grad.clone() for n, p in model.named_parameters()}
    out_c = out_c.detach()
    assert torch.allclose(out_c, out, rtol=1e-5, atol=1e-6)
    for k in grads:
        assert torch.allclose(grads_c[k], grads[k], rtol=1e-4, atol=1e-6), k
    assert pl.get_plan(compiled).scheme.name == "mup"
    opt = pl.optimizer(compiled, "adam", lr=1e-3)  # the wrapper's parameter names resolve too
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_widths():
    for bad in (0, -8):
        with pytest.raises(ValueError, match="positive int"):
            build("mup", width=bad)
        with pytest.raises(ValueError, match="positive int"):
            build("mup", base_width=bad)
    for bad in (64.0, "64", True, None):
        with pytest.raises(TypeError, match="positive int"):
            build("mup", width=bad)
    with pytest.raises(ValueError, match="known schemes"):
        build("muP++")


def test_bad_learning_rates():
    model = build("mup", width=64, base_width=32)
    for bad in (0.0, -1e-3):
        with pytest.raises(ValueError, match="lr must be positive"):
            pl.optimizer(model, "sgd", lr=bad)
    with pytest.raises(TypeError, match="lr must be a finite number"):
        pl.optimizer(model, "adam", lr=float("nan"))
    with pytest.raises(ValueError, match="unknown optimizer"):
        pl.optimizer(model, "lamb", lr=1e-3)


class RawParamNet(nn.Module):
    def __init__(self, width, device=None):
        super().__init__()
        self.inp = nn.Linear(4, width, device=device)
        self.mix = nn.Parameter(torch.randn(width, width, device=device))  # used directly in forward
        self.out = nn.Linear(width, 1, device=device)

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x)) @ self.mix.T)


def test_unrecognized_parameter_and_how_to_fix_it():
    with pytest.raises(ValueError, match=r"cannot tell the role.*mix.*roles=\{name"):
        pl.parameterize(RawParamNet(32), "mup", base=RawParamNet(8, device="meta"))
    # the fix the message names works for a scheme with no multiplier on that role ...
    m = pl.parameterize(RawParamNet(32), "mup", base=RawParamNet(8, device="meta"), roles={"mix": "hidden"})
    assert pl.get_plan(m)["mix"].init_std == pytest.approx(1 / math.sqrt(8) / 2)
    # ... and a scheme that needs a multiplier there points to the canonical form
    with pytest.raises(ValueError, match="canonical"):
        pl.parameterize(RawParamNet(32), "mf", base=RawParamNet(8, device="meta"), roles={"mix": "hidden"})
    m = pl.parameterize(RawParamNet(32), pl.get_scheme("mf").canonical(), base=RawParamNet(8, device="meta"),
                        roles={"mix": "hidden"})
    assert m(torch.randn(2, 4)).shape == (2, 1)
    with pytest.raises(ValueError, match="tagged 'output'"):
        pl.parameterize(RawParamNet(32), "mup", base=RawParamNet(8, device="meta"),
                        roles={"mix": "hidden", "inp.weight": "output"})
    with pytest.raises(ValueError, match="not a role"):
        pl.parameterize(RawParamNet(32), "mup", base=RawParamNet(8, device="meta"), roles={"mix": "matrix"})
    with pytest.raises(ValueError, match="base="):
        pl.parameterize(RawParamNet(32), "mup")
    with pytest.raises(TypeError, match="nn.Module"):
        pl.parameterize("not a module", "mup", base=RawParamNet(8, device="meta"))


def test_double_application_is_an_error_and_unparameterize_undoes_it():
    model = build("mf", width=64, base_width=16)
    with pytest.raises(ValueError, match="already parameterized"):
        pl.parameterize(model, "mup", base=build("mf", width=16, base_width=16))
    with pytest.raises(ValueError, match="no paramlab plan"):
        pl.optimizer(nn.Linear(3, 3), "sgd", lr=0.1)
    sub = pl.parameterize(UserNet(32), "mf", base=UserNet(8, device="meta"))
    wrapper = nn.Sequential(sub)
    with pytest.raises(ValueError, match="already carries paramlab multipliers"):
        pl.parameterize(wrapper, "mup", base=nn.Sequential(UserNet(8, device="meta")))
    x = torch.randint(0, 20, (2, 3))
    pl.unparameterize(sub)
    raw = sub(x)
    again = pl.parameterize(sub, "mf", base=UserNet(8, device="meta"), reinit=False)
    assert not torch.equal(again(x), raw)  # multipliers back on the same weights
