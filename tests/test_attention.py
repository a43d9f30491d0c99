"""The attention-logit scale of attention paramlab did not build: HF modules, sdpa callers, nn.MultiheadAttention."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import paramlab as pl
from foreign import HF, V, SdpaBlock, gpt2, logits, tokens


class SdpaScales(TorchFunctionMode):
    """Records the scale every scaled_dot_product_attention call ends up with (None: sdpa's 1/sqrt(E))."""

    def __init__(self):
        super().__init__()
        self.scales = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            s = args[6] if len(args) > 6 else kwargs.get("scale")
            self.scales.append(float(s) if s is not None else args[0].shape[-1] ** -0.5)
        return func(*args, **kwargs)


def sdpa_scales(model, idx):
    with torch.no_grad(), SdpaScales() as rec:
        logits(model, idx)
    return rec.scales


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_attention_scale_follows_the_scheme(arch):
    """d_head 64 at width 256 (4 heads), 16 at the base width 64: muP gives 1/sqrt(16) * (16/64) = 1/16,
    SP and NTK keep 1/sqrt(64) = 1/8, and the scale reaches the attention kernel HF calls."""
    make = HF[arch]
    idx = tokens()
    for scheme, want in (("mup", 16 ** -0.5 * 16 / 64), ("mf", 1 / 16), ("sp", 1 / 8), ("ntk", 1 / 8)):
        model = pl.parameterize(make(256), scheme, base=make(64, device="meta"), seed=0)
        sites = pl.get_plan(model).attention
        assert len(sites) == 2 and all(s.how == "hf" and s.scale == pytest.approx(want) for s in sites)
        assert sdpa_scales(model, idx) == pytest.approx([want] * 2)
    # at the base width every scheme keeps the model's own 1/sqrt(d_head)
    base = pl.parameterize(make(64), "mup", base=make(64, device="meta"), delta=make(128, device="meta"))
    assert sdpa_scales(base, idx) == pytest.approx([16 ** -0.5] * 2)
    # unparameterize puts the model's own scale back
    model = pl.parameterize(make(256), "mup", base=make(64, device="meta"))
    pl.unparameterize(model)
    assert sdpa_scales(model, idx) == pytest.approx([1 / 8] * 2)


def test_gpt2_layer_dependent_scale_carries_over():
    """scale_attn_by_inverse_layer_idx divides layer i's scale by i + 1: read from the base, kept at every width."""
    def make(w, device=None):
        m = gpt2(w, device=device)
        m.config.scale_attn_by_inverse_layer_idx = True
        for i, block in enumerate(m.transformer.h):
            block.attn.scaling = block.attn.head_dim ** -0.5 / (i + 1)
        return m

    model = pl.parameterize(make(256), "mup", base=make(64, device="meta"))
    assert [s.scale for s in pl.get_plan(model).attention] == pytest.approx([1 / 16, 1 / 32])


def test_module_calling_sdpa_gets_the_scheme_scale():
    idx = tokens()
    model = pl.parameterize(SdpaBlock(256), "mup", base=SdpaBlock(64, device="meta"), seed=0)
    (site,) = pl.get_plan(model).attention
    assert (site.how, site.d_head, site.d_head_base) == ("sdpa", 64, 16)
    assert sdpa_scales(model, idx) == pytest.approx([1 / 16])
    # the forward equals the same block with the scale written in by hand
    manual = SdpaBlock(256)
    manual.load_state_dict(model.state_dict())
    manual.head.register_forward_pre_hook(lambda mod, a: (a[0] / 4,))  # muP readout multiplier 1/m
    with torch.no_grad(), ForceScale(1 / 16):
        want = manual(idx)
    with torch.no_grad():
        assert torch.allclose(model(idx), want, atol=1e-6)
    sp = pl.parameterize(SdpaBlock(256), "sp", base=SdpaBlock(64, device="meta"))
    assert sdpa_scales(sp, idx) == pytest.approx([1 / 8])


class ForceScale(TorchFunctionMode):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            kwargs["scale"] = self.scale
        return func(*args, **kwargs)


class OwnScale(SdpaBlock):
    """Passes a scale of its own (3/d_head, already muP-like): paramlab cannot know it depends on width."""

    def forward(self, idx):
        x = self.emb(idx)
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in self.qkv(self.ln(x)).split(c, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=3.0 / (c // self.n_head))
        return self.head(x + self.proj(y.transpose(1, 2).reshape(b, t, c)))


class NoHeadInfo(SdpaBlock):
    def __init__(self, width, device=None):
        super().__init__(width, device=device)
        del self.n_head, self.n_embd
        self.h = 4

    def forward(self, idx):
        x = self.emb(idx)
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.h, -1).transpose(1, 2) for z in self.qkv(self.ln(x)).split(c, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(x + self.proj(y.transpose(1, 2).reshape(b, t, c)))


def test_sdpa_callers_paramlab_cannot_scale_are_refused_with_the_fix():
    idx = tokens()
    own = pl.parameterize(OwnScale(256), "mup", base=OwnScale(64, device="meta"))
    with pytest.raises(RuntimeError, match=r"passes scale=0\.046875 .* Drop scale=.*'keep'"):
        own(idx)
    kept = pl.parameterize(OwnScale(256), "mup", base=OwnScale(64, device="meta"), attention={"": "keep"})
    assert sdpa_scales(kept, idx) == pytest.approx([3 / 64])
    with pytest.raises(ValueError, match=r"cannot tell its head dim.*attention=\{'': d_head_base\}"):
        pl.parameterize(NoHeadInfo(256), "mup", base=NoHeadInfo(64, device="meta"))
    told = pl.parameterize(NoHeadInfo(256), "mup", base=NoHeadInfo(64, device="meta"), attention={"": 16})
    assert sdpa_scales(told, idx) == pytest.approx([1 / 16])
    # without a base module there is no base head dim to read
    shapes = {n: tuple(p.shape) for n, p in SdpaBlock(64, device="meta").named_parameters()}
    with pytest.raises(ValueError, match="needs its head dim at the base width"):
        pl.parameterize(SdpaBlock(256), "mup", base=shapes)


def encoder(width, device=None):
    layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, device=device)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def test_multihead_attention_is_refused_unless_its_scale_is_the_schemes():
    with pytest.raises(ValueError, match=r"'layers\.0\.self_attn' .*fixes its logit scale at 1/sqrt\(head_dim\).*attention='keep'"):
        pl.parameterize(encoder(64), "mup", base=encoder(16, device="meta"))
    kept = pl.parameterize(encoder(64), "mup", base=encoder(16, device="meta"), attention="keep")
    assert {s.how for s in pl.get_plan(kept).attention} == {"keep"}
    ntk = pl.parameterize(encoder(64), "ntk", base=encoder(16, device="meta"))  # 1/sqrt(d_head) is NTK's own law
    assert {s.how for s in pl.get_plan(ntk).attention} == {"mha"}


class HandWritten(nn.Module):
    def __init__(self, width, device=None):
        super().__init__()
        self.emb = nn.Embedding(V, width, device=device)
        self.qkv = nn.Linear(width, 3 * width, bias=False, device=device)
        self.head = nn.Linear(width, V, device=device)
        self.n_head = 4

    def forward(self, idx):
        x = self.emb(idx)
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in self.qkv(x).split(c, dim=-1))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # (B, nh, T, T)
        y = att.softmax(-1) @ v
        return self.head(y.transpose(1, 2).reshape(b, t, c))


def test_hand_written_attention_is_refused_at_the_first_forward():
    model = pl.parameterize(HandWritten(64), "mup", base=HandWritten(16, device="meta"))
    with pytest.raises(ValueError, match=r"softmax over a 4-D tensor .*hand-written attention.*attention='keep'"):
        model(tokens())
    kept = pl.parameterize(HandWritten(64), "mup", base=HandWritten(16, device="meta"), attention="keep")
    assert kept(tokens()).shape == (4, 12, V)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_attention_logits_at_init_scale_like_the_scheme(arch):
    """q and k are independent at init, so q.k ~ sqrt(d_head): muP's 1/d_head scale gives logits ~ width^-1/2,
    SP's 1/sqrt(d_head) keeps them flat (control). Measured (64-512, 3 seeds): muP -0.50 / -0.51, SP 0.00 / -0.01."""
    import numpy as np

    from paramlab.attention import attention_logits

    widths, make, idx = [64, 128, 256, 512], HF[arch], tokens()
    for scheme, lo, hi in (("mup", -0.6, -0.4), ("sp", -0.1, 0.1)):
        rms = []
        for w in widths:
            vals = []
            for seed in range(3):
                model = pl.parameterize(make(w), scheme, base=make(64, device="meta"), delta=make(128, device="meta"),
                                        seed=seed)
                with torch.no_grad(), attention_logits(model) as rec:
                    logits(model, idx)
                assert len(rec) == 2 and all(t.shape == (4, 4, 12, 12) for t in rec.values())
                vals.append(np.mean([t.pow(2).mean().sqrt().item() for t in rec.values()]))
            rms.append(np.exp(np.mean(np.log(vals))))
        slope = np.polyfit(np.log(widths), np.log(rms), 1)[0]
        assert lo < slope < hi, (scheme, slope, rms)


class ViaMethod(SdpaBlock):
    """Calls sdpa from a method of its own: found through the class, not only through forward's own code."""

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, idx):
        x = self.emb(idx)
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in self.qkv(self.ln(x)).split(c, dim=-1))
        return self.head(x + self.proj(self.attend(q, k, v).transpose(1, 2).reshape(b, t, c)))


def test_sdpa_called_from_a_method_is_found():
    model = pl.parameterize(ViaMethod(256), "mup", base=ViaMethod(64, device="meta"))
    assert [s.how for s in pl.get_plan(model).attention] == ["sdpa"]
    assert sdpa_scales(model, tokens()) == pytest.approx([1 / 16])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_attn_mult_gives_foreign_attention_the_builders_constant(arch):
    """attn_mult replaces the model's base constant: scale = attn_mult / sqrt(d0) * (d0/d)^attn, on HF modules and
    sdpa callers alike; 1/sqrt(d0) is nanoGPT-mup's q.k / d_head at every width (here 1/64 at d_head 64)."""
    make = HF[arch]
    idx = tokens()
    for mult, scheme, want in ((16 ** -0.5, "mup", 1 / 64), (2.0, "mup", 2 / 16), (2.0, "sp", 2 / 8)):
        model = pl.parameterize(make(256), scheme, base=make(64, device="meta"), seed=0, attn_mult=mult)
        assert sdpa_scales(model, idx) == pytest.approx([want] * 2, rel=1e-14)
    block = pl.parameterize(SdpaBlock(256), "mup", base=SdpaBlock(64, device="meta"), seed=0,
                            attn_mult={"": 16 ** -0.5})
    assert sdpa_scales(block, idx) == pytest.approx([1 / 64], rel=1e-14)
    # negative control: without it the model's own constant, sqrt(d0)/d
    assert sdpa_scales(pl.parameterize(make(256), "mup", base=make(64, device="meta")), idx) == pytest.approx([1 / 16] * 2)


def test_attn_mult_refusals():
    with pytest.raises(ValueError, match="attention='keep'"):
        pl.parameterize(gpt2(64), "mup", base=gpt2(32, device="meta"), attention="keep", attn_mult=0.5)
    with pytest.raises(ValueError, match="positive number"):
        pl.parameterize(gpt2(64), "mup", base=gpt2(32, device="meta"), attn_mult=-1.0)
    with pytest.raises(ValueError, match="matches no module"):
        pl.parameterize(gpt2(64), "mup", base=gpt2(32, device="meta"), attn_mult={"nope.*": 1.0})
    mha = lambda w, device=None: nn.MultiheadAttention(w, 4, batch_first=True, device=device)  # noqa: E731
    with pytest.raises(ValueError, match="paramlab's own attention"):
        pl.parameterize(pl.Transformer(V, 64), "mup", base=pl.Transformer(V, 32, device="meta"), attn_mult=2.0)
    with pytest.raises(ValueError, match="attn_mult=2 cannot be set"):
        pl.parameterize(mha(64), "ntk", base=mha(64, device="meta"), delta=mha(32, device="meta"), attn_mult=2.0)
