"""fold: multipliers and attention scales baked into the weights; a plain module with the same outputs."""

import warnings

import pytest
import torch
from torch import nn

import paramlab as pl
from foreign import HF, V, NanoGPT, SdpaBlock, logits, tokens, transformers


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


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tied_mup_hf_model_round_trips_through_save_pretrained(tmp_path, arch):
    """A muP-trained tied Llama / GPT-2 (GPT-2 with nanoGPT-mup's attn_mult: q.k / d_head), folded, saved and loaded
    by plain transformers (a local folder: no network)."""
    make = HF[arch]
    extra = dict(attn_mult=8 ** -0.5) if arch == "gpt2" else {}
    model = pl.parameterize(make(128), "mup", base=make(32, device="meta"), seed=0, embedding_std=1 / 32, **extra)
    opt = pl.optimizer(model, "adam", lr=1e-2)
    idx = tokens()
    for _ in range(2):
        opt.zero_grad()
        model(idx, labels=idx).loss.backward()
        opt.step()
    with torch.no_grad():
        want = logits(model, idx)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the config unties it: nothing to warn about
        folded = pl.fold(model)
    folded.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        got = logits(loaded, idx)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    attn = loaded.model.layers[0].self_attn if arch == "llama" else loaded.transformer.h[0].attn
    assert attn.scaling == pytest.approx(32 ** -0.5)  # HF's own scale, the factor in the query weights
    raw = make(128, tied=False)  # negative control: the unfolded weights in a plain model
    raw.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(logits(raw, idx), want, rtol=1e-3)


def test_fold_multihead_attention_model():
    layer = lambda w, device=None: nn.TransformerEncoder(  # noqa: E731
        nn.TransformerEncoderLayer(w, 4, 2 * w, dropout=0.0, batch_first=True, device=device, dtype=torch.float64), 1,
        enable_nested_tensor=False)
    model = pl.parameterize(layer(64), "ntk", base=layer(16, device="meta"), seed=0)
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    plain = pl.fold(model)
    assert no_paramlab(plain) and torch.allclose(plain(x), model(x), rtol=1e-12, atol=1e-12)


def test_fold_sdpa_caller_needs_a_check_it_can_run():
    """A fused qkv (queries first): the factor 1/2 goes into its first E rows; the root module does not run on a
    random (B, T, C) input, so fold checks it on example= or refuses."""
    block = pl.parameterize(SdpaBlock(128).double(), "mup", base=SdpaBlock(32, device="meta"), seed=0)
    idx = tokens()
    with pytest.raises(ValueError, match="cannot check it.*example="):
        pl.fold(block)
    plain = pl.fold(block, example=idx)
    with torch.no_grad():
        want = block(idx)
        assert no_paramlab(plain) and torch.allclose(plain(idx), want, rtol=1e-12, atol=1e-12)
        assert torch.allclose(plain.qkv.weight[:128], block.qkv.weight[:128] / 2, rtol=1e-15, atol=0)
        assert torch.equal(plain.qkv.weight[128:], block.qkv.weight[128:])


class _HeadwiseQKV(nn.Module):
    """Attention whose fused qkv is laid out per head (q_h | k_h | v_h for each head), as GPT-NeoX does."""

    def __init__(self, width, n_head=4, device=None):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width, device=device, dtype=torch.float64)
        self.n_head, self.n_embd = n_head, width

    def forward(self, x):  # (B, T, C)
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, self.n_head, 3 * c // self.n_head).transpose(1, 2).chunk(3, dim=-1)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(b, t, c)


def test_what_fold_cannot_bake_in_is_refused():
    model = pl.parameterize(_HeadwiseQKV(128), "mup", base=_HeadwiseQKV(32, device="meta"), seed=0)
    with pytest.raises(ValueError, match="does not hold the queries first"):
        pl.fold(model)
    with pytest.raises(ValueError, match="does not hold the queries first"):
        pl.fold(model, example=torch.randn(2, 5, 128, dtype=torch.float64))
    # example= checks the whole model too: a fold that changed the function is refused
    net = pl.parameterize(_SideUse(128), "mup", base=_SideUse(32, device="meta"), seed=0, check_forward=False)
    x = torch.randn(4, 10, dtype=torch.float64)
    assert torch.allclose(pl.fold(net)(x), net(x)) is False  # unchecked, the fold is wrong
    with pytest.raises(ValueError, match="differ from the parameterized"):
        pl.fold(net, example=x)


class _SideUse(nn.Module):
    """Uses its readout weight a second time behind the Linear's back (the first-forward check is turned off)."""

    def __init__(self, width, device=None):
        super().__init__()
        self.inp = nn.Linear(10, width, device=device, dtype=torch.float64)
        self.out = nn.Linear(width, 3, device=device, dtype=torch.float64)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h) + h @ self.out.weight.T


def test_fold_mup_trained_nanogpt_loads_into_plain_nanogpt():
    """nanoGPT under muP (nanoGPT-mup's options, m = 4), 3 AdamW steps, folded: the untied plain model loads the
    state_dict with the same logits (attention factor 1/4 in c_attn's query rows, readout 1/m in lm_head).
    A plain model that ties lm_head to wte cannot hold two tensors: loading into it is the documented hazard."""
    make = lambda w, tied=True, device=None: NanoGPT(w, 2, tied=tied, device=device, dtype=torch.float64)  # noqa: E731
    model = pl.parameterize(make(128), "mup", base=make(32, device="meta"), seed=0, embedding_std=0.02,
                            attn_mult=8 ** -0.5)
    opt = pl.optimizer(model, "adamw", lr=3e-3, eps_mode="none")
    idx = tokens()
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(idx[:, :-1]).reshape(-1, V), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        want = model(idx)
        with pytest.warns(UserWarning, match=r"lm_head.weight \(from transformer.wte.weight\) is a tensor of its own.*"
                                             r"Load the folded state_dict into an untied model"):
            folded = pl.fold(model)  # no config to untie: the hazard below is named
        assert no_paramlab(folded) and torch.allclose(folded(idx), want, rtol=1e-12, atol=1e-12)
        plain = make(128, tied=False)
        plain.load_state_dict(folded.state_dict())
        assert torch.allclose(plain(idx), want, rtol=1e-12, atol=1e-12)
        a = pl.get_plan(model).attention[0]
        assert a.scale == pytest.approx(1 / 32) and a.scale * 32 ** 0.5 == pytest.approx(32 ** -0.5)
        # negative controls: the unfolded weights in the plain model, and the tied plain model, are far off
        raw = make(128, tied=False)
        raw.load_state_dict(model.state_dict())
        assert not torch.allclose(raw(idx), want, rtol=1e-3)
        tied = make(128)
        tied.load_state_dict(folded.state_dict())
        assert not torch.allclose(tied(idx), want, rtol=1e-3)


def _builders():
    f64 = dict(dtype=torch.float64, seed=0)
    return {
        "mlp": (lambda: pl.mlp(10, 3, 128, depth=3, base_width=32, **f64), lambda: pl.MLP(10, 3, 128, 3, dtype=torch.float64),
                torch.randn(4, 10, dtype=torch.float64)),
        "resmlp-completep": (lambda: pl.mlp(10, 3, 128, depth=4, base_width=32, residual=True, base_depth=2,
                                            depth_scaling="completep", **f64),
                             lambda: pl.models.mlp.ResMLP(10, 3, 128, 4, dtype=torch.float64),
                             torch.randn(4, 10, dtype=torch.float64)),
        "cnn": (lambda: pl.cnn(2, 3, 32, depth=2, base_width=8, **f64), lambda: pl.CNN(2, 3, 32, 2, dtype=torch.float64),
                torch.randn(2, 2, 12, dtype=torch.float64)),
        "cbow": (lambda: pl.cbow(30, 128, base_width=32, **f64), lambda: pl.CBOW(30, 128, dtype=torch.float64),
                 torch.randint(0, 30, (4, 5))),
        "transformer-tied": (lambda: pl.transformer(V, 128, depth=4, base_width=32, tied=True, bias=True, attn_mult=2.0,
                                                    base_depth=2, depth_scaling="completep", **f64),
                             lambda: pl.Transformer(V, 128, depth=4, bias=True, dtype=torch.float64), tokens()),
        "transformer": (lambda: pl.transformer(V, 128, depth=2, base_width=32, output_mult=0.5, zero_query=False, **f64),
                        lambda: pl.Transformer(V, 128, depth=2, dtype=torch.float64), tokens()),
    }


@pytest.mark.parametrize("name", list(_builders()))
def test_fold_each_builder_into_its_plain_class(name):
    """Every builder folds; the state_dict loads into the plain class (no paramlab, defaults) with the same outputs."""
    build, plain_cls, x = _builders()[name]
    model = build()
    with torch.no_grad():
        want = model(x)
        folded = pl.fold(model)
        assert no_paramlab(folded) and torch.allclose(folded(x), want, rtol=1e-12, atol=1e-12)
        plain = plain_cls()
        plain.load_state_dict(folded.state_dict())
        assert torch.allclose(plain(x), want, rtol=1e-12, atol=1e-12)
        raw = plain_cls()  # negative control: the parameterized weights as they are
        raw.load_state_dict({k: v for k, v in model.state_dict().items() if k in raw.state_dict()})
        assert not torch.allclose(raw(x), want, rtol=1e-4)


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
