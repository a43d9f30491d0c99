"""The layout table: where fan-in/fan-out live and how a multiplier is installed, per module type."""

import copy

import mup
import pytest
import torch
from torch import nn

import paramlab as pl
from paramlab.layouts import layout_of
from foreign import gpt2, logits, tokens


def by_hand(model):
    """A plain copy computing what the plan says: every use's tensor times its multiplier, no hooks.

    (Independent of paramlab.export: it multiplies the tensors the plan names, uses one by one.)
    """
    plan = pl.get_plan(model)
    out = copy.deepcopy(model)
    pl.unparameterize(out)
    with torch.no_grad():
        for t in plan.tensors:
            out.get_parameter(t.name).mul_(t.mult)
    return out


def encoder(width, device=None, dtype=None):
    layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, device=device, dtype=dtype)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def test_table_lookups():
    assert layout_of(nn.Linear(2, 3)).name == "linear"
    assert layout_of(nn.MultiheadAttention(8, 2).out_proj).name == "linear"  # a Linear subclass
    assert layout_of(mup.MuSharedReadout(nn.Parameter(torch.zeros(5, 4)))).name == "mup_readout"  # MuReadout's entry, by MRO
    assert layout_of(gpt2(32).transformer.h[0].attn.c_attn).name == "hf_conv1d"
    assert layout_of(gpt2(32).transformer.h[0].attn).attention == "hf"
    assert layout_of(nn.ConvTranspose1d(2, 3, 3)).name == "unknown"  # refused: its fan-in depends on the stride


@pytest.mark.parametrize("scheme", ["ntk", "mf"])
def test_multihead_attention_multipliers_reach_out_proj(scheme):
    """NTK and MF put m^-1/2 on hidden weights: in_proj through MHA's inputs, out_proj on MHA's output
    (F.multi_head_attention_forward reads out_proj.weight itself, so a hook on out_proj would never fire).
    Checked in training mode and in eval + no_grad, where TransformerEncoderLayer has a fused fast path."""
    s = pl.get_scheme(scheme)
    if s.attn != 0.5:
        s = pl.custom(scheme, attn=0.5, **{r: s[r] for r in ("input", "hidden", "output", "vector")})  # MHA's own law
    model = pl.parameterize(encoder(64, dtype=torch.float64), s, base=encoder(16, device="meta"), seed=0)
    plan = pl.get_plan(model)
    assert plan["layers.0.self_attn.out_proj.weight"].mult == pytest.approx(0.5)
    assert plan["layers.0.self_attn.in_proj_weight"].mult == pytest.approx(0.5)
    ref = by_hand(model)
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    assert torch.allclose(model(x), ref(x), rtol=1e-12, atol=1e-12)
    model.eval(), ref.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), rtol=1e-12, atol=1e-12)
    # negative control: without out_proj's multiplier the output differs
    wrong = copy.deepcopy(ref)
    with torch.no_grad():
        for layer in wrong.layers:
            layer.self_attn.out_proj.weight.div_(0.5)
    assert not torch.allclose(wrong(x), ref(x), rtol=1e-6)


def test_hf_conv1d_multiplier_acts_on_its_input():
    """GPT-2 under NTK: Conv1D's m^-1/2 as an input scale leaves its bias alone (vector role, multiplier 1)."""
    model = pl.parameterize(gpt2(128, tied=False, dtype=torch.float64), "ntk", base=gpt2(32, tied=False, device="meta"),
                            seed=0, bias_std=0.1)
    assert pl.get_plan(model)["transformer.h.0.attn.c_attn.weight"].mult == pytest.approx(0.5)
    idx = tokens()
    ref = by_hand(model)
    assert torch.allclose(logits(model, idx), logits(ref, idx), rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # negative control: c_attn's multiplier left out
        ref.transformer.h[0].attn.c_attn.weight.div_(0.5)
    assert not torch.allclose(logits(model, idx), logits(ref, idx), rtol=1e-6)


class MupNet(nn.Module):
    def __init__(self, width, device=None):
        super().__init__()
        self.inp = nn.Linear(6, width, device=device)
        self.mid = nn.Linear(width, width, device=device)
        self.readout = mup.MuReadout(width, 3, output_mult=2.0, device=device)

    def forward(self, x):
        return self.readout(torch.tanh(self.mid(torch.tanh(self.inp(x)))))


def mup_net(width=64, base=16, dtype=torch.float64):
    torch.manual_seed(3)
    model = MupNet(width).to(dtype)
    mup.set_base_shapes(model, MupNet(base, device="meta"), delta=MupNet(base + 1, device="meta"))
    for p in model.parameters():  # mup's init (mup.init.normal_), so the model is a muP model end to end
        mup.init.normal_(p, std=0.2) if p.dim() > 1 else nn.init.normal_(p, std=0.1)
    return model


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_mup_model_forward_and_training_equal_mups(opt):
    """A model written for the mup package (MuReadout + set_base_shapes): paramlab takes MuReadout's own
    1/width_mult as the readout multiplier instead of adding its own (which scaled the forward by 1/4)."""
    ref, ours = mup_net(), mup_net()  # the same weights (a deepcopy would drop mup's infshapes)
    pl.parameterize(ours, "mup", reinit=False)  # width dims from mup's infshapes
    plan = pl.get_plan(ours)
    assert plan["readout.weight"].mult == pytest.approx(2.0 / 4)  # MuReadout's output_mult / width_mult
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    assert torch.equal(ours(x), ref(x))
    if opt == "sgd":
        o_ref, o_ours = mup.MuSGD(ref.parameters(), lr=0.1), pl.optimizer(ours, "sgd", lr=0.1)
    else:
        o_ref, o_ours = mup.MuAdam(ref.parameters(), lr=1e-2), pl.optimizer(ours, "adam", lr=1e-2, eps_mode="none")
    for _ in range(4):
        for model, o in ((ref, o_ref), (ours, o_ours)):
            o.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            o.step()
    diff = max((a - b).abs().max().item() for a, b in zip(ref.parameters(), ours.parameters()))
    moved = max((a - b).abs().max().item() for a, b in zip(ref.parameters(), mup_net().parameters()))
    assert diff < 1e-12 and moved > 1e-3
    # negative control: a 0.1% different lr is visible at this tolerance
    off = mup_net()
    pl.parameterize(off, "mup", reinit=False)
    o_off = pl.optimizer(off, opt, lr=(0.1 if opt == "sgd" else 1e-2) * 1.001, **({} if opt == "sgd" else {"eps_mode": "none"}))
    for _ in range(4):
        o_off.zero_grad()
        ((off(x) - y) ** 2).mean().backward()
        o_off.step()
    assert max((a - b).abs().max().item() for a, b in zip(ref.parameters(), off.parameters())) > 1e-9


def test_mup_readout_under_other_schemes_or_without_base_shapes_is_refused():
    with pytest.raises(ValueError, match=r"MuReadout.*output_mult / width_mult\(\) = 0\.5.*replace it by an nn\.Linear"):
        pl.parameterize(mup_net(), "ntk", reinit=False)
    with pytest.raises(ValueError, match=r"call mup\.set_base_shapes\(model, base\) before paramlab\.parameterize"):
        pl.parameterize(MupNet(64), "mup", base=MupNet(16, device="meta"))
    with pytest.raises(ValueError, match="leave paramlab's output_mult at 1"):
        pl.parameterize(mup_net(), "mup", reinit=False, output_mult=2.0)
