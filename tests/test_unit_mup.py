"""paramlab's "u-mup" preset against Graphcore's unit-scaling package (u-muP, Blake et al. 2024), in float64.

Each pair is one architecture written twice: with the package's modules (uu.Linear, uu.LinearReadout,
uu.Embedding, uu.TransformerStack: they carry u-muP's multipliers and tag tensors for uu.optim), and as a plain
torch model (nn.Linear, nn.Embedding) that paramlab parameterizes under "u-mup". Both use the package's
functional ops for what is architecture, not parameterization (the scaled GELU / SwiGLU, the unit-scaled
attention op, the residual split / add with u-muP's tau weights, the RMS norm).

Under Adam the two train identically: unit-scaling's backward scales (1/sqrt(batch) on weight gradients, the
readout's 1/sqrt(fan-out) instead of 1/fan-in) multiply each tensor's gradient by a constant, which Adam
divides out (up to eps; eps = 1e-30 here, and measured at 1e-8). Under SGD they cannot: paramlab steps on true
gradients, the package on its scaled ones (measured below).
"""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import paramlab as pl
from foreign import V, tokens

uu = pytest.importorskip("unit_scaling")
U = uu.functional
tau_rule = uu.transformer_residual_scaling_rule
F64 = torch.float64
D_IN, D_OUT = 12, 5


class UnitMLP(nn.Module):
    """x (B, 12) -> layers.0 -> gelu -> layers.1 -> gelu -> readout (B, 5); unit=True: the package's modules."""

    def __init__(self, width, unit=False, device=None):
        super().__init__()
        lin = (lambda i, o: uu.Linear(i, o)) if unit else (lambda i, o: nn.Linear(i, o, bias=False, device=device))
        self.layers = nn.ModuleList([lin(D_IN, width), lin(width, width)])
        self.readout = uu.LinearReadout(width, D_OUT) if unit else nn.Linear(width, D_OUT, bias=False, device=device)

    def forward(self, x):
        for layer in self.layers:
            x = U.gelu(layer(x))
        return self.readout(x)


class _Attention(nn.Module):
    def __init__(self, d, heads, device=None):
        super().__init__()
        self.linear_qkv = nn.Linear(d, 3 * d, bias=False, device=device)
        self.linear_o = nn.Linear(d, d, bias=False, device=device)
        self.heads = heads

    def forward(self, x):  # (B, S, d): uu.MHSA's structure, written with plain Linears
        q, k, v = rearrange(self.linear_qkv(x), "b s (z h d) -> z b h s d", h=self.heads, z=3)
        return self.linear_o(rearrange(U.scaled_dot_product_attention(q, k, v, is_causal=True), "b h s d -> b s (h d)"))


class _MLP(nn.Module):
    def __init__(self, d, device=None):
        super().__init__()
        self.linear_1, self.linear_gate = (nn.Linear(d, 4 * d, bias=False, device=device) for _ in range(2))
        self.linear_2 = nn.Linear(4 * d, d, bias=False, device=device)

    def forward(self, x):
        return self.linear_2(U.silu_glu(self.linear_1(x), self.linear_gate(x)))


class _Layer(nn.Module):
    """uu.TransformerLayer's pre-norm structure: residual split -> RMS norm -> branch -> residual add (tau)."""

    def __init__(self, d, heads, mhsa_tau, mlp_tau, device=None):
        super().__init__()
        self.mhsa, self.mlp = _Attention(d, heads, device), _MLP(d, device)
        self.mhsa_tau, self.mlp_tau, self.d = mhsa_tau, mlp_tau, d

    def forward(self, x):
        h, skip = U.residual_split(x, tau=self.mhsa_tau)
        x = U.residual_add(self.mhsa(U.rms_norm(h, (self.d,))), skip, tau=self.mhsa_tau)
        h, skip = U.residual_split(x, tau=self.mlp_tau)
        return U.residual_add(self.mlp(U.rms_norm(h, (self.d,))), skip, tau=self.mlp_tau)


class UnitLM(nn.Module):
    """embedding -> L pre-norm layers -> RMS norm -> readout; unit=True: uu.Embedding, uu.TransformerLayers in a
    uu.DepthSequential (it tags their tensors with the depth), uu.LinearReadout (the same parameter names)."""

    def __init__(self, d, layers=2, heads=4, unit=False, device=None):
        super().__init__()
        tau = tau_rule()
        if unit:
            self.embedding = uu.Embedding(V, d)
            self.stack = uu.DepthSequential(*(uu.TransformerLayer(d, heads, tau(2 * i, 2 * layers),
                                                                  tau(2 * i + 1, 2 * layers), is_causal=True)
                                              for i in range(layers)))
            self.readout = uu.LinearReadout(d, V)
        else:
            self.embedding = nn.Embedding(V, d, device=device)
            self.stack = nn.Sequential(*(_Layer(d, heads, tau(2 * i, 2 * layers), tau(2 * i + 1, 2 * layers), device)
                                         for i in range(layers)))
            self.readout = nn.Linear(d, V, bias=False, device=device)
        self.d = d

    def forward(self, idx):
        return self.readout(U.rms_norm(self.stack(self.embedding(idx)), (self.d,)))


def pair(kind, width):
    """(the package's model, paramlab's u-mup model with the same weights)."""
    torch.manual_seed(0)
    if kind == "mlp":
        ref = UnitMLP(width, unit=True).to(F64)
        ours = pl.parameterize(UnitMLP(width).to(F64), "u-mup", base=UnitMLP(32, device="meta"),
                               delta=UnitMLP(64, device="meta"))
    else:
        ref = UnitLM(width, unit=True).to(F64)
        ours = pl.parameterize(UnitLM(width).to(F64), "u-mup", base=UnitLM(32, device="meta"),
                               delta=UnitLM(64, device="meta"), attention="keep", depth_scaling="u-mup", base_depth=1,
                               branches=["stack.*.mhsa.linear_o", "stack.*.mlp.linear_2"])
    plan = pl.get_plan(ours)
    assert all(t.init_std == 1.0 for t in plan if len(t.shape) == 2)  # u-muP's unit init
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def data(kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        return torch.randn(16, D_IN, generator=g, dtype=F64), torch.randn(16, D_OUT, generator=g, dtype=F64)
    idx = tokens(4, 12, seed=seed)
    return idx[:, :-1], idx[:, 1:]


def loss_fn(kind, out, y):
    return F.mse_loss(out, y) if kind == "mlp" else F.cross_entropy(out.reshape(-1, V), y.reshape(-1))


def train(kind, model, opt, steps=5):
    x, y = data(kind)
    losses = []
    for _ in range(steps):
        loss = loss_fn(kind, model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        return torch.tensor(losses, dtype=F64), model(x)


def package_lrs(ref, opt):
    names = {id(p): n for n, p in ref.named_parameters()}
    return {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("kind,width", [("mlp", 64), ("mlp", 256), ("lm", 64), ("lm", 128)])
def test_u_mup_matches_unit_scaling_at_init_and_in_its_lrs(kind, width):
    """Forward at init equal to rtol 1e-12; every tensor's Adam lr equal (uu.optim.Adam's lr_scale_func_adam,
    depth factor included); negative control: paramlab's muP with the same weights computes another function."""
    ref, ours = pair(kind, width)
    x, _ = data(kind)
    with torch.no_grad():
        want = ref(x)
        assert torch.allclose(ours(x), want, rtol=1e-12, atol=1e-13)
    assert pl.effective_lrs(pl.optimizer(ours, "adam", lr=1.0)) == pytest.approx(
        package_lrs(ref, uu.optim.Adam(ref.parameters(), lr=1.0)), rel=1e-14)
    if kind == "mlp":
        other = pl.parameterize(UnitMLP(width).to(F64), "mup", base=UnitMLP(32, device="meta"),
                                delta=UnitMLP(64, device="meta"))
        other.load_state_dict(ref.state_dict())
        with torch.no_grad():
            assert not torch.allclose(other(x), want, rtol=1e-3)


@pytest.mark.parametrize("kind", ["mlp", "lm"])
def test_u_mup_trains_like_unit_scaling_under_adam(kind):
    """5 Adam steps (eps 1e-30: Adam divides out the package's constant backward scales); AdamW with the package's
    lr-independent weight decay is paramlab's weight_decay = wd / lr."""
    width = 128
    for opt_name, wd in (("adam", 0.0), ("adamw", 0.1)):
        ref, ours = pair(kind, width)
        cls = uu.optim.AdamW if opt_name == "adamw" else uu.optim.Adam
        a, ya = train(kind, ref, cls(ref.parameters(), lr=1e-2, eps=1e-30, weight_decay=wd))
        b, yb = train(kind, ours, pl.optimizer(ours, opt_name, lr=1e-2, eps=1e-30, eps_mode="none",
                                               weight_decay=wd / 1e-2))
        assert torch.allclose(b, a, rtol=1e-9, atol=0) and a[-1] < a[0], opt_name
        assert torch.allclose(yb, ya, rtol=1e-8, atol=1e-10), opt_name


def test_u_mup_under_sgd_differs_from_unit_scaling_and_by_how_much():
    """The measured difference the module docstring explains: same lrs, same init, but the package's SGD steps on its
    scaled backward. After 3 steps at lr 0.1 the outputs differ by far more than float error."""
    ref, ours = pair("mlp", 128)
    assert pl.effective_lrs(pl.optimizer(ours, "sgd", lr=1.0)) == pytest.approx(
        package_lrs(ref, uu.optim.SGD(ref.parameters(), lr=1.0)), rel=1e-14)
    _, ya = train("mlp", ref, uu.optim.SGD(ref.parameters(), lr=0.1), 3)
    _, yb = train("mlp", ours, pl.optimizer(ours, "sgd", lr=0.1), 3)
    diff = float((yb - ya).norm() / ya.norm())
    assert diff > 1e-2, diff


def test_u_mup_attention_scale_is_the_package_s_q_k_over_d_head():
    """A plain sdpa attention under u-mup gets the scale unit-scaling's attention op passes to sdpa: mult / d_head."""
    from foreign import SdpaBlock

    model = pl.parameterize(SdpaBlock(128), "u-mup", base=SdpaBlock(32, device="meta"))
    (site,) = pl.get_plan(model).attention
    assert site.scale == pytest.approx(1 / 32, rel=1e-15)
    model = pl.parameterize(SdpaBlock(128), "u-mup", base=SdpaBlock(32, device="meta"), attn_mult=2.0)
    assert pl.get_plan(model).attention[0].scale == pytest.approx(2 / 32, rel=1e-15)
    seen = []

    class Rec(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.scaled_dot_product_attention:
                seen.append(kwargs["scale"])
            return func(*args, **(kwargs or {}))

    q = torch.randn(1, 4, 6, 32)
    with Rec():
        U.scaled_dot_product_attention(q, q, q, is_causal=True, mult=2.0)
    assert seen == pytest.approx([2 / 32])
