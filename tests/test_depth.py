"""Depth rules: base-depth bit-identity with negative controls, the branch multiplier is
output scaling, optimizer factors per role and composition with every width scheme, flat-vs-growing
depth slopes with a negative control, the linearization instrument is exact, errors name the fix."""

import math

import pytest
import torch
import torch.nn.functional as F

import paramlab as pl
from paramlab.depth import DepthExponents, DepthRule, get_depth_rule
from paramlab.measure.depth_coord import depth_coord_check
from paramlab.measure.lazy import LazinessProbe, linearization

F64 = torch.float64


def _tf(depth, base_depth, rule, seed=0, scheme="mup"):
    return pl.transformer(17, 32, depth=depth, base_depth=base_depth, depth_scaling=rule, n_heads=2, base_width=16,
                          max_len=16, bias=True, seed=seed, dtype=F64, scheme=scheme)


def _mlp(depth, base_depth, rule, seed=0):
    return pl.mlp(8, 3, 32, depth=depth, residual=True, base_depth=base_depth, depth_scaling=rule, base_width=16,
                  seed=seed, dtype=F64)


def _cnn(depth, base_depth, rule, seed=0):  # depth counts conv layers: depth - 1 residual blocks
    return pl.cnn(1, 3, 16, depth=depth + 1, residual=True, base_depth=None if base_depth is None else base_depth + 1, depth_scaling=rule,
                  activation="tanh", norm="layer", base_width=8, seed=seed, dtype=F64)


BUILDERS = {
    "transformer": (_tf, lambda g: torch.randint(0, 17, (4, 12), generator=g)),
    "resmlp": (_mlp, lambda g: torch.randn(16, 8, generator=g, dtype=F64)),
    "rescnn": (_cnn, lambda g: torch.randn(8, 1, 12, generator=g, dtype=F64)),
}


def _train(model, x, opt_name, lr, steps=3):
    opt = pl.optimizer(model, opt_name, lr, weight_decay=0.01 if opt_name == "adamw" else 0.0)
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        (out.pow(2).mean() + out.mean()).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("builder", list(BUILDERS))
@pytest.mark.parametrize("opt_name,lr", [("adamw", 1e-2), ("sgd", 0.1)])
def test_base_depth_is_bit_identical(builder, opt_name, lr):
    make, data = BUILDERS[builder]
    x = data(torch.Generator().manual_seed(1))
    ref = _train(make(3, None, None), x, opt_name, lr)  # no depth arguments at all
    for rule in (None, "depth-mup", "completep", 0.75):
        got = _train(make(3, 3, rule), x, opt_name, lr)
        assert all(torch.equal(a, b) for a, b in zip(ref, got)), (builder, rule)
    # negative controls: a 0.1% lr change, and the rule switched on (L0 = 2 < L = 3), must both differ
    off = _train(make(3, None, None), x, opt_name, lr * 1.001)
    assert not all(torch.equal(a, b) for a, b in zip(ref, off))
    on = _train(make(3, 2, "completep"), x, opt_name, lr)
    assert max((a - b).abs().max().item() for a, b in zip(ref, on)) > 1e-6


@pytest.mark.parametrize("rule", ["depth-mup", "completep", 0.6])
def test_branch_multiplier_is_output_scaling(rule):
    m, alpha = 8 / 2, get_depth_rule(rule).alpha
    x = torch.randint(0, 17, (3, 10), generator=torch.Generator().manual_seed(0))
    with_rule, plain = _tf(8, 2, rule), _tf(8, None, None)
    assert pl.get_plan(with_rule).depth.branch_mult == m ** -alpha
    with torch.no_grad():  # scale every branch-output layer (weight AND bias) by m^-alpha
        for n, p in plain.named_parameters():
            if n.endswith(("attn.o.weight", "attn.o.bias", "mlp.proj.weight", "mlp.proj.bias")):
                p.mul_(m ** -alpha)
    assert torch.allclose(with_rule(x), plain(x), rtol=0, atol=1e-12)
    assert not torch.allclose(_tf(8, None, None)(x), plain(x), atol=1e-6)  # the scaling did something


@pytest.mark.parametrize("scheme", ["sp", "ntk", "mf", "mup"])
def test_optimizer_factors_per_role_and_scheme(scheme):
    """In-block tensors: lr x m_L^(alpha-1) (Adam) / m_L^(2alpha-1) (SGD), eps x m_L^-alpha, wd unchanged;
    embeddings, final norm and readout x1; on top of every width scheme's own factors (m_N = 2 here)."""
    m = 4.0
    for rule, alpha in (("depth-mup", 0.5), ("completep", 1.0)):
        for fam, e_lr in (("adamw", alpha - 1), ("sgd", 2 * alpha - 1)):
            kw = dict(weight_decay=0.1)
            got = {n: g for g in pl.param_groups(_tf(8, 2, rule, scheme=scheme), fam, 1e-2, eps=1e-8, **kw)
                   for n in g["names"]}
            ref = {n: g for g in pl.param_groups(_tf(8, None, None, scheme=scheme), fam, 1e-2, eps=1e-8, **kw)
                   for n in g["names"]}
            assert set(got) == set(ref)
            for n, g in got.items():
                inside = n.startswith("blocks.")
                assert math.isclose(g["lr"], ref[n]["lr"] * (m ** e_lr if inside else 1.0), rel_tol=1e-12), (rule, fam, n)
                assert math.isclose(g["weight_decay"], ref[n]["weight_decay"], rel_tol=1e-12)  # no depth factor on wd
                if fam == "adamw":
                    assert math.isclose(g["eps"], ref[n]["eps"] * (m ** -alpha if inside else 1.0), rel_tol=1e-12)
    # eps_mode="none": one fixed eps, depth included
    groups = pl.param_groups(_tf(8, 2, "completep", scheme=scheme), "adam", 1e-2, eps=1e-8, eps_mode="none")
    assert {g["eps"] for g in groups} == {1e-8}
    # the rule itself maps an optimizer's name or class to its family, as the width scheme does
    from paramlab.depth import get_depth_rule

    rule = get_depth_rule("depth-mup")
    assert rule.factors(m, True, "adamw") == rule.factors(m, True, "adam")
    assert rule.factors(m, True, "adamw")[0] != rule.factors(m, True, "sgd")[0]


def test_in_block_sets_and_cnn_counts_blocks():
    d = pl.get_plan(_cnn(4, 2, "completep")).depth
    assert d.depth == 4 and d.base_depth == 2 and d.branches == tuple(f"blocks.{i}.act" for i in range(1, 5))
    assert not any(n.startswith("blocks.0.") for n in d.in_block)  # the input conv is outside
    d = pl.get_plan(_mlp(4, 2, "completep")).depth
    assert d.in_block == {n for n, _ in _mlp(4, None, None).named_parameters() if n.startswith("blocks.")}
    assert "depth rule completep" in pl.role_table(_mlp(4, 2, "completep"), "adam")


def test_parameterize_foreign_module_and_unparameterize():
    class Block(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.ln, self.fc, self.out = torch.nn.LayerNorm(w), torch.nn.Linear(w, w), torch.nn.Linear(w, w)

        def forward(self, x):
            return x + self.out(torch.relu(self.fc(self.ln(x))))

    class Net(torch.nn.Module):
        def __init__(self, w, L):
            super().__init__()
            self.inp, self.blocks, self.head = torch.nn.Linear(5, w), torch.nn.ModuleList(Block(w) for _ in range(L)), torch.nn.Linear(w, 2)

        def forward(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = b(h)
            return self.head(h)

    net = pl.parameterize(Net(32, 4), "mup", base=Net(16, 4), depth_scaling="depth-mup", base_depth=1,
                          branches="blocks.*.out", depth=4)
    d = pl.get_plan(net).depth
    assert d.m_L == 4 and d.branch_mult == 0.5 and len(d.in_block) == 4 * 6
    x = torch.randn(3, 5)
    y = net(x)
    pl.unparameterize(net)
    assert not torch.allclose(net(x), y)  # the branch hooks are gone with the plan
    with pytest.raises(ValueError, match="needs branches="):
        pl.parameterize(Net(32, 4), "mup", base=Net(16, 4), depth_scaling="completep", base_depth=2)
    with pytest.raises(ValueError, match="matches no module"):
        pl.parameterize(Net(32, 4), "mup", base=Net(16, 4), depth_scaling="completep", base_depth=2, branches="blocks.*.proj")
    with pytest.raises(ValueError, match="depth=3 but"):
        pl.parameterize(Net(32, 4), "mup", base=Net(16, 4), depth_scaling="completep", base_depth=2,
                        branches="blocks.*.out", depth=3)
    with pytest.raises(ValueError, match="outside the residual stream"):
        pl.parameterize(Net(32, 4), "mup", base=Net(16, 4), depth_scaling="completep", base_depth=2,
                        branches="blocks.*.out", blocks="*")
    with pytest.raises(ValueError, match="base_depth must be a positive int"):
        pl.parameterize(Net(32, 4), "mup", base=Net(16, 4), depth_scaling="completep", base_depth=0, branches="blocks.*.out")
    with pytest.raises(ValueError, match="give branches="):
        pl.parameterize(Net(32, 4), "mup", base=Net(16, 4), base_depth=2)


def test_branch_returning_a_tuple_names_the_fix():
    class Attn(torch.nn.Module):  # an HF-style attention: (output, weights)
        def __init__(self, w):
            super().__init__()
            self.o = torch.nn.Linear(w, w)

        def forward(self, x):
            return self.o(x), None

    class Net(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.inp, self.blocks, self.head = torch.nn.Linear(4, w), torch.nn.ModuleList(Attn(w) for _ in range(3)), torch.nn.Linear(w, 2)

        def forward(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = h + b(h)[0]
            return self.head(h)

    net = pl.parameterize(Net(32), "mup", base=Net(16), depth_scaling="completep", base_depth=1, branches="blocks.*")
    with pytest.raises(TypeError, match="output projection"):
        net(torch.randn(2, 4))
    ok = pl.parameterize(Net(32), "mup", base=Net(16), depth_scaling="completep", base_depth=1, branches="blocks.*.o")
    assert pl.get_plan(ok).depth.depth == 3 and torch.isfinite(ok(torch.randn(2, 4))).all()


def test_bad_rules_and_builders_refuse():
    with pytest.raises(ValueError, match=r"outside \[0.5, 1\]"):
        get_depth_rule(0.3)
    with pytest.raises(ValueError, match="unknown depth_scaling"):
        get_depth_rule("depth-muP2")
    with pytest.raises(TypeError, match="finite alpha"):
        get_depth_rule(float("nan"))
    with pytest.raises(ValueError, match="pass residual=True"):
        pl.mlp(8, 3, 32, depth=3, base_depth=2, depth_scaling="completep")
    with pytest.raises(ValueError, match="positive mean adds coherently"):
        pl.cnn(1, 3, 16, depth=5, residual=True, base_depth=3, depth_scaling="depth-mup", base_width=8)
    pl.cnn(1, 3, 16, depth=5, residual=True, base_depth=3, depth_scaling="completep", base_width=8)  # accepted


def _rel_slope(rule):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 40, generator=g), torch.randint(0, 10, (128,), generator=g)
    res = depth_coord_check(lambda L, s: pl.mlp(40, 10, 32, depth=L, residual=True, base_depth=2, depth_scaling=rule,
                                                base_width=32, seed=s),
                            [2, 4, 8, 16], x, lambda out: F.cross_entropy(out, y), steps=2, lr=1e-2, seeds=(0, 1))
    return res


def test_depth_slopes_flat_vs_growing(tmp_path):
    """The stream's relative change after 2 Adam steps (residual MLP, width 32, L = 2..16) grows with depth
    without a rule (predicted >= +1/2; measured +0.54) and is flat under either rule (predicted 0; measured
    +0.01 depth-muP, -0.02 CompleteP). Negative control: the depth-muP multiplier without its lr factor
    grows (measured +0.32)."""
    none, dmup, cp = (_rel_slope(r) for r in (None, "depth-mup", "completep"))
    assert none.slope("rel") > 0.3, none.table()
    assert abs(dmup.slope("rel")) < 0.15 and abs(cp.slope("rel")) < 0.15, (dmup.table(), cp.table())
    for res, alpha in ((dmup, 0.5), (cp, 1.0)):  # the branch output at init carries exactly m_L^-alpha
        assert abs(res.slope("branch0") + alpha) < 0.1
        assert abs(res.slope("dW") - (alpha - 1)) < 0.1
    ctrl = _rel_slope(DepthRule("alpha-0.5-no-lr", 0.5, DepthExponents()))
    assert ctrl.slope("rel") > 0.15, ctrl.table()
    assert not ctrl.passed  # the check flags it
    from paramlab.report import plot_depth_coord

    assert plot_depth_coord([none, dmup, cp, ctrl], tmp_path / "d.png").stat().st_size > 0


def test_linearization_is_exact():
    """A module linear in its parameters has no remainder; a bilinear one has exactly dW2 dW1 x."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False, dtype=F64), torch.nn.Linear(5, 4, bias=False, dtype=F64))
    x = torch.randn(7, 6, generator=g, dtype=F64)
    th0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    d1, d2 = 0.1 * torch.randn(5, 6, generator=g, dtype=F64), 0.1 * torch.randn(4, 5, generator=g, dtype=F64)
    one = linearization(net, x, th0, {"0.weight": th0["0.weight"] + d1, "1.weight": th0["1.weight"]}, residual=False)
    assert one["rem"] < 1e-14 and one["change"] > 1e-2
    two = linearization(net, x, th0, {"0.weight": th0["0.weight"] + d1, "1.weight": th0["1.weight"] + d2}, residual=False)
    assert math.isclose(two["rem"], (x @ d1.T @ d2.T).norm().item(), rel_tol=1e-10)


def test_laziness_probe_on_transformer_blocks():
    """Probe every block (explicit attention for forward AD); trained blocks are not exactly linear."""
    model = _tf(4, 2, "completep")
    x = torch.randint(0, 17, (4, 12), generator=torch.Generator().manual_seed(0))
    probe = LazinessProbe(model, x)
    _train(model, x, "adamw", 1e-2)
    out = probe.measure()
    assert [r["block"] for r in out["per_block"]] == [f"blocks.{i}" for i in range(4)]
    assert 0 < out["nonlin"] < 1 and all(r["change"] > 0 for r in out["per_block"])
    with pytest.raises(ValueError, match="base_depth="):
        LazinessProbe(pl.transformer(17, 32, depth=2, n_heads=2, base_width=16), x)


def test_depth_transfer_runs_tiny_and_l0_is_one_network(tmp_path):
    """The experiment at its tiny size: a summary per rule, and the L0 runs of every rule give the same
    loss (they are one network). Its science is in the README (quick and default sizes)."""
    from paramlab.experiments import get
    from paramlab.experiments.depth_transfer import optimum

    out = get("depth_transfer").run("tiny", root=tmp_path, use_wandb=False, progress=False)
    assert out["l0_identical"] is True
    assert set(out["verdicts"]) == {"none", "depth-mup", "completep"}
    assert (tmp_path / "depth_transfer").is_dir()
    # the parabola refinement: exact on a parabola in log-loss, stays on the grid at an edge
    lrs = [-4, -3, -2, -1]
    g, f, edge, _ = optimum(lrs, [math.exp((x + 2.3) ** 2) for x in lrs])
    assert g == -2 and math.isclose(f, -2.3, abs_tol=1e-9) and not edge
    assert optimum(lrs, [1.0, 2.0, 3.0, 4.0])[:3] == (-4.0, -4.0, True)
