"""fold: multipliers and attention scales baked into the weights; a plain module with the same outputs."""

import pytest
import torch
from torch import nn

import paramlab as pl
from foreign import HF, SdpaBlock, logits, tokens, transformers


def no_paramlab(model):
    hooks = [h for m in model.modules() for h in list(m._forward_pre_hooks.values()) + list(m._forward_hooks.values())]
    return not hooks and getattr(model, "paramlab_plan", None) is None


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("scheme", ["mup", "ntk"])
def test_fold_hf_models_same_outputs_no_hooks(arch, scheme):
    """Tied under muP (embedding 1, readout 1/m) and NTK (readout m^-1/2, hidden m^-1/2): the readout use is
    untied into its own tensor; muP's attention factor goes into the query projection."""
    make = HF[arch]
    model = pl.parameterize(make(128, dtype=torch.float64), scheme, base=make(32, device="meta"), seed=0,
                            attention="keep" if scheme == "ntk" else "auto")
    idx = tokens()
    with torch.no_grad():
        want = logits(model, idx)
        plain = pl.fold(model)
        assert no_paramlab(plain) and torch.allclose(logits(plain, idx), want, rtol=1e-12, atol=1e-12)
    assert not plain.config.tie_word_embeddings and plain.lm_head.weight is not plain.get_input_embeddings().weight
    assert pl.get_plan(model)  # the original keeps its plan and hooks
    if scheme == "mup":  # negative control: the attention factor (1/2 here) is visible at this tolerance
        assert pl.get_plan(model).attention[0].scale == pytest.approx(pl.get_plan(model).attention[0].original / 2)
        for m in plain.modules():
            if isinstance(getattr(m, "scaling", None), float):
                m.scaling /= 2
        with torch.no_grad():
            assert not torch.allclose(logits(plain, idx), want, rtol=1e-6)


def test_tied_mup_hf_model_round_trips_through_save_pretrained(tmp_path):
    """A muP-trained tied Llama, folded, saved and loaded by plain transformers (a local folder: no network)."""
    make = HF["llama"]
    model = pl.parameterize(make(128), "mup", base=make(32, device="meta"), seed=0)
    opt = pl.optimizer(model, "adam", lr=1e-2)
    idx = tokens()
    for _ in range(2):
        opt.zero_grad()
        model(idx, labels=idx).loss.backward()
        opt.step()
    with torch.no_grad():
        want = logits(model, idx)
    pl.fold(model).save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        got = logits(loaded, idx)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert loaded.model.layers[0].self_attn.scaling == pytest.approx(32 ** -0.5)  # HF's own scale, factor in q_proj


def test_fold_multihead_attention_model():
    layer = lambda w, device=None: nn.TransformerEncoder(  # noqa: E731
        nn.TransformerEncoderLayer(w, 4, 2 * w, dropout=0.0, batch_first=True, device=device, dtype=torch.float64), 1,
        enable_nested_tensor=False)
    model = pl.parameterize(layer(64), "ntk", base=layer(16, device="meta"), seed=0)
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    plain = pl.fold(model)
    assert no_paramlab(plain) and torch.allclose(plain(x), model(x), rtol=1e-12, atol=1e-12)


def test_what_fold_cannot_bake_in_is_refused():
    block = pl.parameterize(SdpaBlock(128), "mup", base=SdpaBlock(32, device="meta"))
    with pytest.raises(ValueError, match="does not know which projection makes the queries"):
        pl.fold(block)
    with pytest.raises(ValueError, match="paramlab's own"):
        pl.fold(pl.transformer(32, 64, depth=1, base_width=32, tied=True))


class _Res(nn.Module):
    """A user's pre-LN residual MLP: blocks.i.fc -> relu -> blocks.i.proj, added to the stream."""

    def __init__(self, width, depth, device=None):
        super().__init__()
        kw = dict(device=device, dtype=torch.float64)
        self.inp = nn.Linear(6, width, **kw)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(norm=nn.LayerNorm(width, **kw), fc=nn.Linear(width, width, **kw),
                               proj=nn.Linear(width, width, **kw))) for _ in range(depth))
        self.out = nn.Linear(width, 3, **kw)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b.proj(torch.relu(b.fc(b.norm(h))))
        return self.out(h)


def test_fold_bakes_depth_branch_multiplier_into_weights():
    """CompleteP at L = 8 vs L0 = 2: each branch output x 1/4. The folded state_dict must carry it, so a plain
    model built without paramlab computes the same function (before this, the hook was copied and a plain
    model loading the state_dict silently lost the 1/4)."""
    model = pl.parameterize(_Res(64, 8), "mup", base=_Res(16, 8, device="meta"), seed=0,
                            depth_scaling="completep", base_depth=2, branches="blocks.*.proj")
    assert pl.get_plan(model).depth.branch_mult == pytest.approx(0.25)
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
        plain = pl.fold(model)
        assert no_paramlab(plain) and torch.allclose(plain(x), want, rtol=1e-12, atol=1e-12)
        fresh = _Res(64, 8)
        fresh.load_state_dict(plain.state_dict())
        assert torch.allclose(fresh(x), want, rtol=1e-12, atol=1e-12)
        # negative control: the same weights without the branch multiplier are far off
        for b in fresh.blocks:
            b.proj.weight.mul_(4)
            b.proj.bias.mul_(4)
        assert not torch.allclose(fresh(x), want, rtol=1e-3)


def test_fold_refuses_a_branch_it_cannot_scale_through_its_weights():
    model = pl.parameterize(_Res(32, 4), "mup", base=_Res(16, 4, device="meta"), seed=0,
                            depth_scaling="completep", base_depth=2, branches="blocks.*.norm")
    with pytest.raises(ValueError, match="only an affine module"):
        pl.fold(model)
