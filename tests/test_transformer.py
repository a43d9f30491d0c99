"""Tests for paramlab.models.transformer: one network at the base width, the attention scale from the
scheme table, width-stable activations under muP (coordinate check), tied embeddings, a character LM
that trains under every scheme, and any user Transformer block."""

import dataclasses
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import paramlab as pl
from helpers import activation_sizes, max_ratio
from helpers import slopes as _slopes
from paramlab.models.transformer import Transformer, transformer
from paramlab.schemes import PRESETS

PRESET_NAMES = list(PRESETS)
V = 32


def lm_loss(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _lrs(model, opt):
    return pl.effective_lrs(pl.optimizer(model, opt, lr=0.1))


@pytest.mark.parametrize("kw", [dict(), dict(pos="rotary", tied=True, bias=True, zero_query=True)], ids=["learned", "rotary-tied"])
def test_base_width_all_presets_are_one_network(kw):
    idx = torch.randint(0, V, (3, 12))
    models = {s: transformer(V, 32, depth=2, n_heads=4, scheme=s, base_width=32, seed=5, max_len=16, **kw)
              for s in PRESET_NAMES}
    ref = models["sp"]
    for s, m in models.items():
        for k, v in m.state_dict().items():
            assert torch.equal(v, ref.state_dict()[k]), (s, k)  # bit-identical weights
        assert torch.equal(m(idx), ref(idx)), s  # identical outputs
        assert m.blocks[0].attn.scale == 1 / math.sqrt(8)  # the same attention at the base width
        for opt in ("sgd", "adam"):
            assert _lrs(m, opt) == _lrs(ref, opt) and set(_lrs(m, opt).values()) == {0.1}, (s, opt)
        assert all(t.mult == 1.0 for t in pl.get_plan(m))


@pytest.mark.parametrize("scheme", PRESET_NAMES + ["lazy-rich-0.5"])
def test_attention_scale_comes_from_the_scheme_table(scheme):
    m = transformer(V, 128, depth=1, n_heads=4, scheme=scheme, base_width=32, attn_mult=2.0, max_len=8)
    d_head, d_head_base = 32, 8
    expected = 2.0 / math.sqrt(d_head_base) * (d_head_base / d_head) ** pl.get_scheme(scheme).attn
    assert m.blocks[0].attn.scale == pytest.approx(expected)


def test_attention_scale_is_1_over_d_head_under_mup_and_1_over_sqrt_under_sp():
    # TP5 Def. 4.1 in the mup package's form: q.k * sqrt(d_head_base) / d_head (mup README: 8/d at base 64)
    for scheme, want in (("mup", math.sqrt(8) / 32), ("mf", math.sqrt(8) / 32), ("sp", 1 / math.sqrt(32)),
                         ("ntk", 1 / math.sqrt(32)), ("sp-stable", 1 / math.sqrt(32))):
        m = transformer(V, 128, depth=1, n_heads=4, scheme=scheme, base_width=32, max_len=8)
        assert m.blocks[0].attn.scale == pytest.approx(want), scheme


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_explicit_attention_matches_fused(pos):
    m = transformer(V, 64, depth=2, n_heads=4, scheme="mup", base_width=32, pos=pos, max_len=16, seed=0,
                    dtype=torch.float64)
    idx = torch.randint(0, V, (2, 16))
    fused = m(idx)
    logits = []
    h = m.blocks[1].attn.attn_logits.register_forward_hook(lambda mod, a, out: logits.append(out))
    assert torch.allclose(m.expose_attn_logits(True)(idx), fused, atol=1e-10)
    h.remove()
    assert logits[0].shape == (2, 4, 16, 16)  # (B, H, T, T), before the causal mask
    # causal: the prediction at position t does not depend on later tokens
    idx2 = idx.clone()
    idx2[:, 10:] = (idx2[:, 10:] + 1) % V
    assert torch.allclose(m(idx2)[:, :10], fused[:, :10], atol=1e-10)


def test_roles_and_role_table():
    m = transformer(V, 64, depth=2, n_heads=4, scheme="mup", base_width=32, bias=True, max_len=16)
    roles = {t.name: t.role for t in pl.get_plan(m)}
    assert roles["tok_emb.weight"] == roles["pos_emb.weight"] == "input"
    for lin in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj"):
        assert roles[f"blocks.1.{lin}.weight"] == "hidden" and roles[f"blocks.1.{lin}.bias"] == "vector"
    assert roles["blocks.0.ln1.weight"] == roles["ln_f.bias"] == "vector"
    assert roles["readout.weight"] == "output" and roles["readout.bias"] == "scalar"
    table = pl.role_table(m, "adam")
    print(table)
    for col in ("name", "shape", "role", "c_adam", "init std", "lr mult"):
        assert col in table
    assert "blocks.0.mlp.fc.weight" in table and "256x64" in table
    tied = transformer(V, 64, depth=1, n_heads=4, scheme="mup", base_width=32, pos="rotary", tied=True, max_len=16)
    print(pl.role_table(tied, "sgd"))
    plan = pl.get_plan(tied)
    assert "readout.weight" not in plan and plan["tok_emb.weight"].role == "input"  # one tensor: the embedding's init, lr
    (use,) = plan.uses  # and a second use, the readout, with its own role and multiplier
    assert (use.name, use.tensor, use.role, use.mult) == ("readout.weight", "tok_emb.weight", "output", 0.5)
    assert "= tok_emb.weight" in pl.role_table(tied)
    # init= overrides reach parameterize (zero_query is one)
    z = transformer(V, 64, depth=1, n_heads=4, base_width=32, zero_query=True, init={"blocks.*.mlp.proj.weight": 0.01})
    plan = pl.get_plan(z)
    assert plan["blocks.0.attn.q.weight"].init == "zeros" and not z.blocks[0].attn.q.weight.any()
    assert plan["blocks.0.mlp.proj.weight"].init_std == pytest.approx(0.01 * 2 ** -0.5)  # base std x m^-b (muP hidden)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        transformer(V, 66, n_heads=4, base_width=32)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        transformer(V, 64, n_heads=4, base_width=30)
    with pytest.raises(ValueError, match="pos must be"):
        transformer(V, 64, base_width=32, pos="alibi")
    with pytest.raises(ValueError, match="even d_head"):
        transformer(V, 36, n_heads=4, base_width=36, pos="rotary")
    with pytest.raises(ValueError, match="zero the shared embedding"):
        transformer(V, 64, base_width=32, tied=True, readout_zero_init=True)
    m = transformer(V, 64, base_width=32, max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 9, dtype=torch.long))


def test_parameterizing_the_class_directly_needs_apply_plan():
    make = lambda w, device=None: Transformer(V, w, depth=1, n_heads=4, tied=True, max_len=8, device=device)  # noqa: E731
    m = pl.parameterize(make(128), "mup", base=make(32, device="meta"), seed=0)
    idx = torch.randint(0, V, (2, 8))
    with pytest.raises(RuntimeError, match="apply_plan"):
        m(idx)
    m.apply_plan(pl.get_plan(m))
    built = transformer(V, 128, depth=1, n_heads=4, base_width=32, tied=True, max_len=8, seed=0)
    assert torch.equal(m(idx), built(idx))
    assert m.readout.mult == built.readout.mult == 0.25
    pl.unparameterize(m)
    with pytest.raises(RuntimeError, match=r"apply_plan\(None\)"):
        m(idx)
    m.apply_plan(None)
    assert m.blocks[0].attn.scale == 1 / math.sqrt(32) and m.readout.mult == 1.0


# -- tied embeddings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["mup", "sp", "ntk"])
def test_tied_embedding_one_role_one_lr_and_the_readout_multiplier(scheme):
    m = transformer(V, 128, depth=1, n_heads=4, scheme=scheme, base_width=32, tied=True, max_len=16, seed=0)
    assert m.readout.weight is m.tok_emb.weight
    names = [n for n, _ in m.named_parameters()]
    assert "tok_emb.weight" in names and "readout.weight" not in names  # listed once
    plan = pl.get_plan(m)
    t = plan["tok_emb.weight"]
    assert t.role == "input" and t.init_std == 1.0  # the embedding's constant init: never rescaled
    for opt in ("sgd", "adam"):
        groups = [g for g in pl.optimizer(m, opt, lr=0.1).param_groups if "tok_emb.weight" in g["names"]]
        assert len(groups) == 1 and sum(p is m.tok_emb.weight for p in groups[0]["params"]) == 1
        assert groups[0]["lr"] * groups[0]["lr_mult"] == pytest.approx(0.1 * t.lr_mult(opt))
    # the readout's multiplier m^-a_output (times output_mult) acts in the unembedding forward only
    s = pl.get_scheme(scheme)
    assert m.readout.mult == pytest.approx(4.0 ** -s.output.a)
    h = torch.randn(2, 3, 128)
    assert torch.allclose(m.readout(h), h @ m.tok_emb.weight.T * 4.0 ** -s.output.a)
    # muP: both uses are vector-like with the same (b, c) (TP5 Table 8), so tying loses nothing
    if scheme == "mup":
        assert (s.input.b, s.input.c_sgd, s.input.c_adam) == (s.output.b, s.output.c_sgd, s.output.c_adam)
    half = transformer(V, 128, depth=1, n_heads=4, scheme=scheme, base_width=32, tied=True, max_len=16, output_mult=0.5)
    assert half.readout.mult == pytest.approx(0.5 * 4.0 ** -s.output.a)  # width-free constant x m^-a_output


def test_tied_model_trains_and_save_load_keeps_it_tied(tmp_path):
    torch.manual_seed(0)
    m = transformer(V, 64, depth=1, n_heads=4, scheme="mup", base_width=32, tied=True, bias=True, max_len=16, seed=0)
    data = torch.randint(0, 8, (8, 17))  # a small sub-vocabulary: learnable quickly
    x, y = data[:, :-1], data[:, 1:]
    opt = pl.optimizer(m, "adam", lr=1e-2)
    emb0 = m.tok_emb.weight.detach().clone()
    losses = []
    for _ in range(20):
        loss = lm_loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert not torch.equal(m.tok_emb.weight, emb0) and m.readout.weight is m.tok_emb.weight  # still one tensor

    path = tmp_path / "tied.pt"
    torch.save(m.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    assert sd["tok_emb.weight"].untyped_storage().data_ptr() == sd["readout.weight"].untyped_storage().data_ptr()
    out = m(x)
    for assign in (False, True):
        fresh = transformer(V, 64, depth=1, n_heads=4, scheme="mup", base_width=32, tied=True, bias=True, max_len=16,
                            seed=1)
        fresh.load_state_dict(torch.load(path, weights_only=True), assign=assign)
        assert fresh.readout.weight is fresh.tok_emb.weight, assign  # same Parameter, same storage
        assert fresh.readout.weight.data_ptr() == fresh.tok_emb.weight.data_ptr()
        assert torch.equal(fresh(x), out)
        # and it keeps training as one tensor
        opt = pl.optimizer(fresh, "sgd", lr=0.1)
        lm_loss(fresh(x), y).backward()
        opt.step()
        assert fresh.readout.weight is fresh.tok_emb.weight
    # a checkpoint whose embedding and readout differ is not silently tied
    untied = dict(sd)
    untied["readout.weight"] = torch.randn_like(sd["readout.weight"])
    with pytest.raises(RuntimeError, match="differ"):
        fresh.load_state_dict(untied)


# -- a character-level LM trains under every scheme --------------------------------------------------


def char_corpus():
    rng = random.Random(0)
    subj, verb, obj = ["the cat", "a dog", "my bird"], ["sees", "eats", "likes"], ["the fish", "a bone", "some seed"]
    text = " ".join(f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}." for _ in range(200))
    chars = sorted(set(text))
    return torch.tensor([chars.index(c) for c in text]), len(chars)


@pytest.mark.parametrize("scheme", PRESET_NAMES)
def test_char_lm_trains_under_every_scheme(scheme):
    ids, vocab = char_corpus()
    g = torch.Generator().manual_seed(0)
    m = transformer(vocab, 64, depth=2, n_heads=4, scheme=scheme, base_width=32, pos="rotary", max_len=32, seed=0)
    opt = pl.optimizer(m, "adam", lr=1e-2)
    losses = []
    for _ in range(40):  # a fresh batch of 16 windows of 32 characters each step
        starts = torch.randint(0, len(ids) - 33, (16,), generator=g)
        batch = torch.stack([ids[s:s + 33] for s in starts])
        loss = lm_loss(m(batch[:, :-1]), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.5 * losses[0], (scheme, losses[0], losses[-5:])
    print(scheme, [round(v, 2) for v in losses[::10]], round(float(np.mean(losses[-5:])), 2))


# -- coordinate check --------------------------------------------------------------------------------

WIDTHS = [64, 128, 256, 512]
LOGITS = ("blocks.0.attn.attn_logits", "blocks.1.attn.attn_logits")


_CACHE = {}


def coord_check(scheme, lr=1e-2, **kw):
    """name -> (n_widths, 4) array of activation RMS at steps 0..3; attention logits exposed."""
    key = (scheme, lr, tuple(sorted(kw.items())))
    if key not in _CACHE:
        g = torch.Generator().manual_seed(0)
        data = torch.randint(0, V, (8, 17), generator=g)
        _CACHE[key] = activation_sizes(
            lambda w: transformer(V, w, depth=2, n_heads=4, scheme=scheme, base_width=WIDTHS[0], max_len=16, seed=1,
                                  attn_logits=True, **kw), WIDTHS, data[:, :-1], data[:, 1:], "adam", lr, "xent")
    return _CACHE[key]


def slopes(v):
    return _slopes(WIDTHS, v)


# muP runs zero the readout and the query weights, as TP5 and the mup README recommend: otherwise the
# logits and the attention logits at init shrink like 1/sqrt(width), a known transient.
MUP_KW = dict(readout_zero_init=True, zero_query=True)


def test_coord_check_mup_flat_sp_grows():
    mup = coord_check("mup", **MUP_KW)
    ratios = {n: max_ratio(v) for n, v in mup.items()}
    print("mup max ratio vs base width:", {n: round(r, 3) for n, r in ratios.items()})
    assert all(r <= 1.5 for n, r in ratios.items() if n not in LOGITS), ratios
    sp = coord_check("sp")
    sp_slopes = {n: max(slopes(v)) for n, v in sp.items()}
    print("sp max slope over steps:", {n: round(s, 2) for n, s in sp_slopes.items()})
    assert max(sp_slopes.values()) > 0.3, sp_slopes
    for n in LOGITS:  # the attention logits grow under SP (1/sqrt(d_head) attention, SP learning rates) ...
        assert sp_slopes[n] > 0.3, (n, sp_slopes[n])
        # ... and do not under muP (1/d_head attention): stable, whatever their finite-width drift (next test)
        assert max(slopes(mup[n])) < 0.3, (n, slopes(mup[n]))


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured: under muP (Adam lr 1e-2, 3 steps, 8x16 tokens, 4 heads, d_head 16..128) the attention logits "
    "shrink with width, RMS ratio 512 vs 64 ~ 1/2.0, log-log slope ~ -0.3 at steps 2-3 (q.k is still mostly the "
    "CLT part ~ sqrt(d_head) at these sizes; the LLN part ~ d_head that 1/d_head attention is built for takes "
    "over with more steps / wider heads / fewer tokens: the next test measures l(d) = A(t) + B(t) d^-1/2 and "
    "puts the size this bound needs at 3 steps at d_model >= ~1600). Reported, bound not loosened."))
def test_coord_check_mup_attention_logits_within_factor_1_5():
    mup = coord_check("mup", **MUP_KW)
    ratios = {n: max_ratio(mup[n]) for n in LOGITS}
    print("mup attention-logit ratios:", ratios, {n: [round(s, 2) for s in slopes(mup[n])] for n in LOGITS})
    assert all(r <= 1.5 for r in ratios.values()), ratios


def logit_sizes(scheme, steps=12, seeds=(1, 2), **kw):
    """name -> (n_widths, steps + 1) attention-logit RMS, averaged over seeds (Adam lr 1e-2, same batch)."""
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, V, (8, 17), generator=g)
    out = {n: np.zeros((len(WIDTHS), steps + 1)) for n in LOGITS}
    for seed in seeds:
        rec = activation_sizes(lambda w: transformer(V, w, depth=2, n_heads=4, scheme=scheme, base_width=WIDTHS[0],
                                                     max_len=16, seed=seed, attn_logits=True, **kw),
                               WIDTHS, data[:, :-1], data[:, 1:], "adam", 1e-2, "xent", steps=steps)
        for n in LOGITS:
            out[n] += rec[n] / len(seeds)
    return out


def lln_clt_fit(v, t):
    """Fit l(d) = A + B d^-1/2 on all widths but the widest at step t; returns A, B and the relative miss
    at the widest width of this two-part model, of A alone (a constant) and of B d^-1/2 alone."""
    x = np.array(WIDTHS[:-1], dtype=float) ** -0.5
    y, x_new, y_new = v[:-1, t], WIDTHS[-1] ** -0.5, v[-1, t]
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], 1), y, rcond=None)
    b_only = float(x @ y / (x @ x))
    misses = [(a + b * x_new) / y_new - 1, y.mean() / y_new - 1, b_only * x_new / y_new - 1]
    return a, b, misses


def test_mup_attention_logits_are_a_width_free_part_plus_a_decaying_clt_part():
    """Why the 3-step check above fails, measured (THEORY.md §4.7: trained q and k correlate, so q.k ~ d
    (LLN) and 1/d attention keeps it O(1); the uncorrelated part of q.k ~ sqrt(d) (CLT) shrinks as
    d^-1/2 under 1/d). Under muP the logits follow l(d) = A(t) + B(t) d^-1/2: fitted on d_model 64-256
    at step 12, this two-part model predicts d_model 512 at least twice as well as either part alone
    (a constant, or B d^-1/2), with B > 0 and an LLN part A(t) that grows step by step and is a
    sizable share of the logit. The same fit on muP with 1/sqrt(d) attention (logits ~ sqrt(d)) gives
    B < 0 or no such prediction, which is what makes the test able to fail.

    Measured (2 seeds, RMS): blocks.0 A(12) = 0.63, B(12) = 3.8, d_model 512 predicted +4.7% (a
    constant: +29%, B d^-1/2 alone: -41%); blocks.1 -1.8% (+47%, -31%). At step 3 A is about 40x smaller than B,
    so the 3-step check's 1.5x bound over 8x width needs d_model >= ~1600 (an l1 run gave A = 0.024,
    B = 1.0 at step 3: u = B / (A sqrt(d)) <= 1.06 at d >= 1600).
    """
    steps = 12
    mup = logit_sizes("mup", steps=steps, **MUP_KW)
    for n in LOGITS:
        fits = [lln_clt_fit(mup[n], t) for t in range(4, steps + 1)]
        a, b, (miss, miss_lln, miss_clt) = fits[-1]
        print(n, f"A={a:.3f} B={b:.2f}; widest predicted {miss:+.1%} (A alone {miss_lln:+.1%}, "
                 f"B d^-1/2 alone {miss_clt:+.1%})", "A(t):", [round(float(f[0]), 3) for f in fits])
        assert abs(miss) < 0.5 * min(abs(miss_lln), abs(miss_clt)), (n, miss, miss_lln, miss_clt)
        assert b > 0, (n, b)
        assert all(f1[0] > f0[0] for f0, f1 in zip(fits, fits[1:])), (n, [f[0] for f in fits])
        assert a > 0.25 * mup[n][-1, steps], (n, a, mup[n][-1, steps])
    sqrt_attn = dataclasses.replace(pl.get_scheme("mup"), name="mup-sqrt-attn", attn=0.5)
    wrong = logit_sizes(sqrt_attn, steps=steps, seeds=(1,), **MUP_KW)
    for n in LOGITS:
        _, b, (miss, miss_lln, miss_clt) = lln_clt_fit(wrong[n], steps)
        print(n, "1/sqrt(d) attention:", f"B={b:.2f} widest predicted {miss:+.1%} (A alone {miss_lln:+.1%}, "
                                          f"B d^-1/2 alone {miss_clt:+.1%})")
        assert b < 0 or abs(miss) >= 0.5 * min(abs(miss_lln), abs(miss_clt)), (n, b, miss)


# -- any user Transformer block ----------------------------------------------------------------------


class UserBlock(nn.Module):
    """Written here, not by paramlab: embedding, pre-LN attention with its own q/k/v/o, MLP, head."""

    def __init__(self, width, n_heads=2, device=None):
        super().__init__()
        kw = dict(device=device)
        self.emb = nn.Embedding(V, width, **kw)
        self.ln = nn.LayerNorm(width, **kw)
        self.qkv = nn.Linear(width, 3 * width, bias=False, **kw)
        self.out = nn.Linear(width, width, bias=False, **kw)
        self.ff = nn.Sequential(nn.LayerNorm(width, **kw), nn.Linear(width, 2 * width, **kw), nn.GELU(),
                                nn.Linear(2 * width, width, **kw))
        self.head = nn.Linear(width, V, **kw)
        self.n_heads, self.head_dim = n_heads, width // n_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)  # sdpa's own default, spelled out: paramlab rescales it

    def forward(self, idx):  # (B, T) -> (B, T, V)
        x = self.emb(idx)
        q, k, v = rearrange(self.qkv(self.ln(x)), "b t (three h d) -> three b h t d", three=3, h=self.n_heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        x = x + self.out(rearrange(y, "b h t d -> b t (h d)"))
        return self.head(x + self.ff(x))


def test_parameterize_a_user_transformer_block_with_meta_base():
    model = pl.parameterize(UserBlock(64), "mup", base=UserBlock(16, device="meta"), seed=0)
    roles = {t.name: t.role for t in pl.get_plan(model)}
    assert roles["emb.weight"] == "input" and roles["qkv.weight"] == roles["out.weight"] == "hidden"
    assert roles["ff.1.weight"] == roles["ff.3.weight"] == "hidden" and roles["ff.0.weight"] == roles["ln.bias"] == "vector"
    assert roles["head.weight"] == "output" and roles["head.bias"] == "scalar"
    assert pl.get_plan(model)["head.weight"].mult == pytest.approx(0.25)
    print(pl.role_table(model, "adam"))
    idx = torch.randint(0, V, (2, 6))
    opt = pl.optimizer(model, "adam", lr=1e-2)
    lm_loss(model(idx[:, :-1]), idx[:, 1:]).backward()
    opt.step()
    assert torch.isfinite(model(idx)).all()
    assert [(s.module, s.how, s.scale) for s in pl.get_plan(model).attention] == [("", "sdpa", pytest.approx(8 ** -0.5 * 8 / 32))]
    # nn.MultiheadAttention cannot take muP's 1/d_head attention: refused unless the user opts out
    mha = lambda w, device=None: nn.MultiheadAttention(w, 2, batch_first=True, device=device)  # noqa: E731
    with pytest.raises(ValueError, match="MultiheadAttention fixes its logit scale"):
        pl.parameterize(mha(64), "mup", base=mha(16, device="meta"))
    net = pl.parameterize(mha(64), "mup", base=mha(16, device="meta"), attention="keep")
    plan = pl.get_plan(net)
    assert plan["in_proj_weight"].role == plan["out_proj.weight"].role == "hidden"  # from the layout table
    assert plan.attention[0].how == "keep"
