"""Each peer reproduced from documented options (docs/peers.md), in float64, against the peer's own conventions.

EleutherAI/nanoGPT-mup is not a package: its conventions are written out here from its README table (master:
muP) and the CompleteP paper's Table 1 with its branch README (`completep`), on a nanoGPT-shaped model
(`foreign.NanoGPT`):

    init       wte, wpe ~ N(0, s^2); c_attn, c_fc ~ N(0, s^2 / m); c_proj ~ N(0, s^2 / (2 L m)) (master) or
               N(0, s^2 / m) (completep); biases 0, LayerNorm 1 / 0; s = init_std = 0.02, m = width / base width
    forward    q.k / d_head at every width; lm_head(x * output_alpha / m); completep: x + m_L^-alpha * branch(x)
    AdamW      hidden weights lr / m; everything else lr; weight decay only on >= 2-d tensors;
               master: one weight_decay for every decayed group; completep: hidden weights weight_decay * m,
               in-block tensors (hidden weights, their biases, ln_1 / ln_2) lr * m_L^(alpha-1), one global
               eps * m^-1 * m_L^-alpha; the loop sets group lr = lr(t) * lr_scale (cosine schedule)
"""

import math

import pytest
import torch
import torch.nn.functional as F

import paramlab as pl
from foreign import V, NanoGPT, tokens

S = 0.02  # nanoGPT's init_std
HIDDEN = ("c_attn.weight", "c_fc.weight", "c_proj.weight")
BRANCHES = ["transformer.h.*.attn.c_proj", "transformer.h.*.mlp.c_proj"]


def peer_model(width, base, layers, *, completep=None, base_depth=None, output_alpha=1.0, seed=0):
    """nanoGPT-mup's GPT at `width` (muP relative to `base`), completep = alpha or None, its own init."""
    torch.manual_seed(seed)
    model = NanoGPT(width, layers, dtype=torch.float64)
    m = width / base
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("c_attn.weight", "c_fc.weight")) or (n.endswith("c_proj.weight") and completep):
                p.normal_(0, S / math.sqrt(m))
            elif n.endswith("c_proj.weight"):
                p.normal_(0, S / math.sqrt(2 * layers * m))
            elif p.dim() == 2:
                p.normal_(0, S)
            elif ".ln_" in n and n.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    d_head = width // 4
    for block in model.transformer.h:
        block.attn.attn_scale = 1.0 / d_head
        block.branch_mult = (layers / base_depth) ** -completep if completep else 1.0
    model.head_mult = output_alpha / m
    return model


def peer_optimizer(model, width, base, lr, wd, eps, *, completep=None, m_L=1.0):
    """nanoGPT-mup's configure_optimizers: groups with lr_scale (and completep's global eps)."""
    m = width / base
    depth_lr = m_L ** (completep - 1) if completep else 1.0
    groups = {}
    for n, p in model.named_parameters():
        in_block = ".h." in n
        if n.endswith(HIDDEN):
            key = (depth_lr / m, wd * m if completep else wd)
        elif in_block:
            key = (depth_lr if completep else 1.0, 0.0)
        else:
            key = (1.0, wd if p.dim() >= 2 else 0.0)
        groups.setdefault(key, []).append(p)
    if completep:
        eps = eps / m * m_L ** -completep
    return torch.optim.AdamW([{"params": ps, "lr_scale": s, "weight_decay": w} for (s, w), ps in groups.items()],
                             lr=lr, betas=(0.9, 0.95), eps=eps)


def ours(width, base, layers, *, completep=None, base_depth=None, output_alpha=1.0, attn_mult="peer"):
    """The plain nanoGPT under paramlab, with the options docs/peers.md gives for nanoGPT-mup."""
    d0 = base // 4
    init = {"transformer.h.*.attn.c_attn.weight": S, "transformer.h.*.mlp.c_fc.weight": S,
            "transformer.h.*.c_proj.weight": S if completep else S / math.sqrt(2 * layers)}
    depth = dict(depth_scaling=completep, base_depth=base_depth, branches=BRANCHES) if completep else {}
    return pl.parameterize(NanoGPT(width, layers, dtype=torch.float64), "mup",
                           base=NanoGPT(base, layers, device="meta"),
                           delta=NanoGPT(2 * base, layers, device="meta"), seed=0, embedding_std=S, init=init,
                           output_mult=output_alpha, attn_mult=d0 ** -0.5 if attn_mult == "peer" else attn_mult,
                           **depth)


def our_optimizer(model, width, base, lr, wd, eps, *, completep=None, m_L=1.0):
    if completep:  # the peer's one global eps: eps_mode="none" with that number
        return pl.optimizer(model, "adamw", lr=lr, betas=(0.9, 0.95), weight_decay=wd, no_decay="nanogpt",
                            eps=eps / (width / base) * m_L ** -completep, eps_mode="none")
    extra = dict(decoupled_wd=True) if wd else {}
    return pl.optimizer(model, "adamw", lr=lr, betas=(0.9, 0.95), weight_decay=wd, no_decay="nanogpt", eps=eps,
                        eps_mode="none", **extra)


def cosine(it, lr=3e-3, warmup=2, decay=10, min_lr=3e-4):
    """nanoGPT's learning-rate schedule: linear warmup, cosine decay to min_lr."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    ratio = min(1.0, (it - warmup) / (decay - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def run(model, opt, steps, peer):
    """nanoGPT's loop: set each group's lr from the schedule, one AdamW step per batch; the losses."""
    losses = []
    for it in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine(it) * (g["lr_scale"] if peer else 1.0)
        idx = tokens(4, 12, seed=it % 2)  # two batches, alternating: a loss that falls
        x, y = idx[:, :-1], idx[:, 1:]
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


def same_weights(dst, src):
    dst.load_state_dict(src.state_dict())
    return dst


@pytest.mark.parametrize("width", [64, 256])
def test_nanogpt_mup_master_init_forward_and_lrs(width):
    """Init stds, logits at init and per-tensor AdamW lrs equal the peer's at m = 1 and m = 4 (base 64)."""
    base, layers = 64, 2
    peer, model = peer_model(width, base, layers), ours(width, base, layers)
    m = width / base
    for t in pl.get_plan(model):
        want = (S / math.sqrt(m) if t.name.endswith(("c_attn.weight", "c_fc.weight")) else
                S / math.sqrt(2 * layers * m) if t.name.endswith("c_proj.weight") else S if len(t.shape) == 2 else 0.0)
        assert t.init_std == pytest.approx(want, rel=1e-14), t.name
    same_weights(model, peer)
    idx = tokens()
    with torch.no_grad():
        got, want = model(idx), peer(idx)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    lrs = pl.effective_lrs(our_optimizer(model, width, base, 1.0, 0.0, 1e-8))
    names = {id(p): n for n, p in peer.named_parameters()}
    peer_lrs = {names[id(p)]: g["lr_scale"] for g in peer_optimizer(peer, width, base, 1.0, 0.0, 1e-8).param_groups
                for p in g["params"]}
    assert lrs == pytest.approx(peer_lrs, rel=1e-14)
    # negative control: paramlab's own attention constant (attn_mult 1: sqrt(d0)/d_head) is not the peer's 1/d_head
    other = same_weights(ours(width, base, layers, attn_mult=None), peer)
    with torch.no_grad():
        assert not torch.allclose(other(idx), want, rtol=1e-6)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_nanogpt_mup_master_trains_like_the_peer(wd):
    """10 AdamW steps of nanoGPT's loop at m = 4, tied embeddings, output_alpha 2: the same losses and logits."""
    width, base, layers = 128, 32, 2
    peer = peer_model(width, base, layers, output_alpha=2.0)
    model = same_weights(ours(width, base, layers, output_alpha=2.0), peer)
    popt = peer_optimizer(peer, width, base, 3e-3, wd, 1e-8)
    try:
        opt = our_optimizer(model, width, base, 3e-3, wd, 1e-8)
    except TypeError as e:  # decoupled_wd: the optimizer family's keyword (docs/peers.md)
        pytest.skip(f"pl.optimizer has no decoupled_wd yet: {e}")
    a, b = run(peer, popt, 10, True), run(model, opt, 10, False)
    assert torch.allclose(b, a, rtol=1e-10, atol=0) and a[-1] < a[0] - 0.1
    idx = tokens(seed=99)
    with torch.no_grad():
        assert torch.allclose(model(idx), peer(idx), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_nanogpt_mup_completep_trains_like_the_peer(alpha):
    """CompleteP (alpha 1) and depth-muP (alpha 1/2) at m = 4, L = 4 from L0 = 2: branch multipliers, in-block
    lrs, hidden wd x m, the peer's one global eps; 10 steps of nanoGPT's loop with weight decay."""
    width, base, layers, base_depth = 128, 32, 4, 2
    peer = peer_model(width, base, layers, completep=alpha, base_depth=base_depth)
    model = ours(width, base, layers, completep=alpha, base_depth=base_depth)
    for t in pl.get_plan(model):
        want = S / 2 if t.name.endswith(HIDDEN) else S if len(t.shape) == 2 else 0.0
        assert t.init_std == pytest.approx(want, rel=1e-14), t.name
    same_weights(model, peer)
    popt = peer_optimizer(peer, width, base, 3e-3, 0.1, 1e-8, completep=alpha, m_L=2.0)
    opt = our_optimizer(model, width, base, 3e-3, 0.1, 1e-8, completep=alpha, m_L=2.0)
    names = {id(p): n for n, p in peer.named_parameters()}
    peer_lrs = {names[id(p)]: g["lr_scale"] for g in popt.param_groups for p in g["params"]}
    assert pl.effective_lrs(opt) == pytest.approx({k: 3e-3 * v for k, v in peer_lrs.items()}, rel=1e-14)
    a, b = run(peer, popt, 10, True), run(model, opt, 10, False)
    assert torch.allclose(b, a, rtol=1e-10, atol=0) and a[-1] < a[0] - 0.1
    # negative control: without the depth rule the same weights and options give another trajectory
    plain = same_weights(ours(width, base, layers), peer_model(width, base, layers, completep=alpha,
                                                                base_depth=base_depth))
    c = run(plain, our_optimizer(plain, width, base, 3e-3, 0.0, 1e-8), 10, False)
    assert not torch.allclose(c, a, rtol=1e-4)


def test_mup_muadamw_with_weight_decay():
    """mup's MuAdam(impl=AdamW) scales the hidden weight decay by width_mult, as paramlab does by default: per-tensor
    lr and weight_decay equal, 3 steps equal in float64 (mup's MuSGD / MuAdam without wd: tests/test_mup_interop.py)."""
    import mup
    from helpers import rel, train
    from test_mup_interop import D_IN, D_OUT, pair

    ref, ours = pair(torch.float64)
    opt_ref = mup.MuAdam(ref.parameters(), impl=torch.optim.AdamW, lr=1e-2, weight_decay=0.1)
    opt = pl.optimizer(ours, "adamw", lr=1e-2, weight_decay=0.1, eps_mode="none")
    names = {id(p): n for n, p in ref.named_parameters()}
    want = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt_ref.param_groups for p in g["params"]}
    got = {n: (g["lr"] * g["lr_mult"], g["weight_decay"]) for g in opt.param_groups for n in g["names"]}
    assert set(got) == set(want) and all(got[n] == pytest.approx(want[n], rel=1e-14) for n in want)
    x, y = torch.randn(8, D_IN, dtype=torch.float64), torch.randn(8, D_OUT, dtype=torch.float64)
    a, b = train(ref, opt_ref, x, y, 3), train(ours, opt, x, y, 3)
    assert rel(b, a) < 1e-12 and rel(a[-1], a[0]) > 1e-3
