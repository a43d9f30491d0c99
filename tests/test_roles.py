"""paramlab.roles: width dims from a base and a delta model (mup's rule), roles from them, width multipliers;
roles per use of a tensor (tied embeddings), and bases that do not match the model."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import paramlab as pl
from foreign import HF, V, logits, tokens
from paramlab.roles import NORM_TYPES, fan_in, infer_role, param_kinds, width_dims_from_models, width_mult


class Net(nn.Module):
    def __init__(self, width, device=None):
        super().__init__()
        kw = dict(device=device)
        self.emb = nn.Embedding(11, width, **kw)
        self.conv = nn.Conv1d(3, width, 5, **kw)
        self.hid = nn.Linear(width, width, **kw)
        self.norm = nn.LayerNorm(width, **kw)
        self.out = nn.Linear(width, 7, **kw)


def test_roles_follow_which_of_fan_in_and_fan_out_grow():
    model, base, delta = Net(96), Net(32, "meta"), Net(65, "meta")
    dims = width_dims_from_models(model, base, delta)
    kinds = param_kinds(model)
    roles = {n: infer_role(kinds[n], dims[n]) for n in kinds}
    assert roles == {"emb.weight": "input", "conv.weight": "input", "conv.bias": "vector", "hid.weight": "hidden",
                     "hid.bias": "vector", "norm.weight": "vector", "norm.bias": "vector", "out.weight": "output",
                     "out.bias": "scalar"}
    # m is current / base size of the last width dim: fan_in for a matrix, fan_out for an input weight
    assert width_mult((96, 96), dims["hid.weight"]) == 3.0 and width_mult((7, 96), dims["out.weight"]) == 3.0
    assert width_mult((96, 3, 5), dims["conv.weight"]) == 3.0 and width_mult((7,), dims["out.bias"]) == 1.0
    assert fan_in("conv", (96, 3, 5)) == 15 and fan_in("embedding", (11, 96)) == 1


def test_what_paramlab_cannot_classify_gets_no_role():
    assert infer_role("other", (32, 32)) is None  # a raw 2-D Parameter: the user must say
    assert infer_role("conv", (32, 3, 8)) is None  # a growing kernel-size dim is not a width
    assert infer_role("other", (None,)) == "scalar" and infer_role("other", (32,)) == "vector"


def test_norm_types_cover_torch_norms():
    for mod in (nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.BatchNorm1d(4), nn.InstanceNorm1d(4, affine=True)):
        assert isinstance(mod, NORM_TYPES)
    if hasattr(nn, "RMSNorm"):
        assert isinstance(nn.RMSNorm(4), NORM_TYPES)
    assert not isinstance(nn.Linear(2, 2), NORM_TYPES)


def test_same_shapes_without_delta_mark_no_width_dim():
    dims = width_dims_from_models(Net(32), Net(32, "meta"))
    assert all(all(d is None for d in v) for v in dims.values())
    with pytest.raises(ValueError):
        width_dims_from_models(Net(32), {"emb.weight": (11, 32)})  # the base must cover every parameter


# -- tensors used twice ----------------------------------------------------------------------------


WIDTHS = [64, 128, 256, 512]


def logit_sizes(make, scheme, tied, seeds=3):
    """Per width, geometric mean over seeds of the RMS of three parts of the initial logits: of tokens that
    never occur in the input ('absent'), of each position's own token ('self'), and of all of them."""
    idx = tokens(high=V // 2)  # tokens V/2 .. V-1 never occur
    out = {"absent": [], "self": [], "all": []}
    for w in WIDTHS:
        vals = {k: [] for k in out}
        for seed in range(seeds):
            model = pl.parameterize(make(w, tied), scheme, base=make(64, tied, "meta"), delta=make(128, tied, "meta"),
                                    seed=seed)
            with torch.no_grad():
                lg = logits(model, idx)  # (B, T, V)
            vals["absent"].append(lg[..., V // 2:].pow(2).mean().sqrt().item())
            vals["self"].append(lg.gather(-1, idx[..., None]).pow(2).mean().sqrt().item())
            vals["all"].append(lg.pow(2).mean().sqrt().item())
        for k in out:
            out[k].append(float(np.exp(np.mean(np.log(vals[k])))))
    return {k: float(np.polyfit(np.log(WIDTHS), np.log(v), 1)[0]) for k, v in out.items()}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tied_and_untied_hf_logits_at_init_scale_like_mup(arch):
    """muP's readout has effective std ~ 1/width, so a logit that sums width independent terms is ~ width^-1/2.

    With tied embeddings the readout row of the input's own token is that token's embedding, which the
    residual stream carries: that logit is a law-of-large-numbers sum, Theta(1) (muP's largest allowed
    size, slope 0), while the logits of tokens absent from the input stay ~ width^-1/2. Before the
    readout use got its own multiplier, tied Llama's logits grew like width^+0.8.
    Measured (widths 64-512, 3 seeds): untied all -0.50 / -0.49; tied absent -0.49 / -0.51, self -0.01 / 0.00.
    """
    make = HF[arch]
    untied = logit_sizes(make, "mup", tied=False)
    assert -0.6 < untied["all"] < -0.4, untied
    tied = logit_sizes(make, "mup", tied=True)
    assert -0.6 < tied["absent"] < -0.4, tied
    assert abs(tied["self"]) < 0.1, tied
    # negative control: tied SP has no readout multiplier, and its logits grow like sqrt(width)
    sp = logit_sizes(make, "sp", tied=True, seeds=2)
    assert sp["absent"] > 0.4, sp


def test_tied_hf_plan_has_one_tensor_and_two_uses():
    model = pl.parameterize(HF["llama"](256), "mup", base=HF["llama"](64, device="meta"), seed=0)
    plan = pl.get_plan(model)
    t = plan["model.embed_tokens.weight"]
    assert "lm_head.weight" not in plan and (t.role, t.init_std, t.mult) == ("input", 1.0, 1.0)
    assert t.lr_mult("adam") == 1.0 and t.lr_mult("sgd") == 4.0  # muP input = output: same init and lr
    (u,) = plan.uses
    assert (u.name, u.tensor, u.role, u.mult) == ("lm_head.weight", "model.embed_tokens.weight", "output", 0.25)
    table = pl.role_table(model, "adam")
    assert "lm_head.weight" in table and "= model.embed_tokens.weight" in table
    # the readout's multiplier acts in lm_head only: the embedding's output is unscaled
    h = torch.randn(2, 3, 256)
    assert torch.allclose(model.lm_head(h), h @ model.model.embed_tokens.weight.T / 4)
    idx = tokens()
    assert torch.equal(model.model.embed_tokens(idx), model.model.embed_tokens.weight[idx])


class EmbReadout(nn.Module):
    """A readout written as h @ emb.weight.T, the way much LM code ties its unembedding."""

    def __init__(self, width, device=None):
        super().__init__()
        self.emb = nn.Embedding(V, width, device=device)
        self.mix = nn.Linear(width, width, device=device)

    def forward(self, idx):
        return torch.tanh(self.mix(self.emb(idx))) @ self.emb.weight.T


class LinearReadout(EmbReadout):
    """The fix the error names: a Linear that shares the embedding's weight."""

    def __init__(self, width, device=None):
        super().__init__(width, device)
        self.head = nn.Linear(width, V, bias=False, device=device)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(torch.tanh(self.mix(self.emb(idx))))


def test_readout_that_uses_an_embedding_weight_directly_is_refused():
    model = pl.parameterize(EmbReadout(64), "mup", base=EmbReadout(16, device="meta"))
    with pytest.raises(ValueError, match=r"emb\.weight is used by .* not by the module that holds it.*nn\.Linear sharing"):
        model(tokens())
    fixed = pl.parameterize(LinearReadout(64), "mup", base=LinearReadout(16, device="meta"))
    assert [(u.name, u.role, u.mult) for u in pl.get_plan(fixed).uses] == [("head.weight", "output", 0.25)]
    fixed(tokens())  # passes the check, which then removes itself
    assert not pl.audit.pending(fixed)
    # the user can waive the check for a use that is not part of the network's function
    waived = pl.parameterize(EmbReadout(64), "mup", base=EmbReadout(16, device="meta"), check_forward=False)
    assert waived(tokens()).shape == (4, 12, V)


class SharedRaw(nn.Module):
    """One raw (w, w) tensor held by two modules paramlab has no layout for."""

    def __init__(self, width, device=None):
        super().__init__()
        self.a, self.b = nn.Module(), nn.Module()
        self.a.p = nn.Parameter(torch.zeros(width, width, device=device))
        self.b.p = self.a.p

    def forward(self, x):
        return x @ self.a.p @ self.b.p


def test_a_shared_tensor_whose_uses_need_different_inits_is_refused():
    with pytest.raises(ValueError, match=r"a\.p.*used in several places.*a\.p as hidden, b\.p as input.*Untie"):
        pl.parameterize(SharedRaw(32), "mup", base=SharedRaw(8, device="meta"), roles={"a.p": "hidden", "b.p": "input"})
    # the same two roles under a scheme where they share b and c are fine (NTK: input and hidden b = c_sgd = 0)
    pl.parameterize(SharedRaw(32), pl.get_scheme("ntk").canonical(), base=SharedRaw(8, device="meta"),
                    roles={"a.p": "input", "b.p": "input"})


# -- bases that do not match the model ---------------------------------------------------------------


def mlp(d_in, width, device=None):
    return pl.MLP(d_in, 3, width, depth=2, device=device)


def test_base_that_differs_in_a_non_width_dim_is_an_error_naming_the_tensor():
    with pytest.raises(ValueError, match=r"'layers\.0\.weight': dim 1 is 4 in the model but 5 in the base.*factor of 0\.8"):
        pl.parameterize(mlp(4, 64), "mup", base=mlp(5, 16, device="meta"))
    # with delta, a dim that base and delta agree on must agree with the model too
    with pytest.raises(ValueError, match=r"'layers\.0\.weight': dim 1 is 4 in the model but 5 in both base and delta"):
        pl.parameterize(mlp(4, 64), "mup", base=mlp(5, 16, device="meta"), delta=mlp(5, 32, device="meta"))
    good = pl.get_plan(pl.parameterize(mlp(4, 64), "mup", base=mlp(4, 16, device="meta")))
    assert good["layers.0.weight"].role == "input"  # (the d_in-5 base made it 'hidden' before)


def test_base_dict_with_a_wrong_shape_is_an_error_naming_the_tensor():
    shapes = {n: tuple(p.shape) for n, p in mlp(4, 16, device="meta").named_parameters()}
    pl.parameterize(mlp(4, 64), "mup", base=dict(shapes))
    bad = dict(shapes, **{"layers.1.weight": (16, 20)})
    with pytest.raises(ValueError, match=r"'layers\.1\.weight': dim 1 is 64 in the model but 20 in the base"):
        pl.parameterize(mlp(4, 64), "mup", base=bad)
    dims = pl.roles.width_dims_from_models(mlp(4, 64), mlp(4, 16, device="meta"))
    with pytest.raises(ValueError, match=r"'readout\.weight' has rank 2 .* but 1 dims"):
        pl.parameterize(mlp(4, 64), "mup", base=dict(dims, **{"readout.weight": (None,)}))
    with pytest.raises(ValueError, match=r"'layers\.0\.weight' has base dims \[0, None\]"):
        pl.parameterize(mlp(4, 64), "mup", base=dict(dims, **{"layers.0.weight": (0, None)}))


def test_hf_conv1d_is_initialized_by_its_fan_in():
    """GPT-2's Conv1D stores its weight in x out: fan-in is dim 0 (c_attn: 64 at the base width, not 192)."""
    model = pl.parameterize(HF["gpt2"](256), "mup", base=HF["gpt2"](64, device="meta"), seed=0)
    plan = pl.get_plan(model)
    for name, fan_in_base in (("transformer.h.0.attn.c_attn.weight", 64), ("transformer.h.0.mlp.c_proj.weight", 256)):
        want = 1 / math.sqrt(fan_in_base) / 2  # muP hidden: sigma_base * m^-1/2, m = 4
        assert plan[name].init_std == pytest.approx(want)
        assert model.get_parameter(name).std().item() == pytest.approx(want, rel=0.02)
    assert plan["transformer.h.0.attn.c_attn.weight"].role == "hidden"
    assert plan["transformer.wpe.weight"].role == "input"


class RawRect(nn.Module):
    """A raw (2w, w) tensor used as x @ P.T: paramlab cannot know which dim is its fan-in."""

    def __init__(self, width, device=None):
        super().__init__()
        self.inp = nn.Linear(4, width, device=device)
        self.p = nn.Parameter(torch.zeros(2 * width, width, device=device))
        self.out = nn.Linear(2 * width, 1, device=device)

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x)) @ self.p.T)


def test_a_raw_non_square_tensor_needs_its_base_std():
    with pytest.raises(ValueError, match=r"'p' \[64, 32\] .*cannot tell which dims are its fan-in.*init=\{'p': std\}"):
        pl.parameterize(RawRect(32), "mup", base=RawRect(8, device="meta"), roles={"p": "hidden"})
    model = pl.parameterize(RawRect(32), "mup", base=RawRect(8, device="meta"), roles={"p": "hidden"},
                            init={"p": 8 ** -0.5})
    assert pl.get_plan(model)["p"].init_std == pytest.approx(8 ** -0.5 / 2)
