"""paramlab.optim: per-tensor lr, weight decay and Adam eps from the plan, checked against the scheme
tables by hand (lr * m^-c, wd * m^c, eps * m^-(a + g)); per-tensor learning rates survive learning-rate
loops and schedulers; weight-decay exclusion; lr_mult for every optimizer name."""

import math

import pytest
import torch

import paramlab as pl
from paramlab.optim import param_groups

WIDTH, BASE = 256, 64
M = WIDTH / BASE


def model(scheme="mup"):
    return pl.mlp(8, 3, WIDTH, depth=2, scheme=scheme, base_width=BASE, seed=0)


def per_tensor(groups, key):
    return {n: g[key] for g in groups for n in g["names"]}


@pytest.mark.parametrize("scheme", ["sp", "ntk", "mf", "mup"])
@pytest.mark.parametrize("family", ["sgd", "adam"])
def test_lr_is_base_lr_times_m_to_the_minus_c(scheme, family):
    s = pl.get_scheme(scheme)
    lrs = per_tensor(param_groups(model(scheme), family, lr=0.1), "lr")
    roles = {"layers.0.weight": "input", "layers.1.weight": "hidden", "readout.weight": "output",
             "layers.0.bias": "vector", "readout.bias": "scalar"}
    for name, role in roles.items():
        m = 1.0 if role == "scalar" else M
        c = s[role].c_adam if family == "adam" else s[role].c_sgd
        assert lrs[name] == pytest.approx(0.1 * m ** -c, rel=1e-12), (name, role)


def test_weight_decay_keeps_lr_times_wd_width_free_and_adam_eps_moves_with_the_gradient():
    s = pl.get_scheme("mup")
    groups = param_groups(model(), "adam", lr=1e-3, weight_decay=0.1, eps=1e-8)
    lr, wd, eps = (per_tensor(groups, k) for k in ("lr", "weight_decay", "eps"))
    for n in lr:
        assert lr[n] * wd[n] == pytest.approx(1e-3 * 0.1, rel=1e-12)
    g = s["output"].a + s["output"].b  # the backward signal's exponent: the readout's effective init std
    assert eps["layers.1.weight"] == pytest.approx(1e-8 * M ** -(s["hidden"].a + g))
    assert eps["readout.weight"] == pytest.approx(1e-8 * M ** -s["output"].a)
    fixed = per_tensor(param_groups(model(), "adam", lr=1e-3, eps=1e-8, eps_mode="none"), "eps")
    assert set(fixed.values()) == {1e-8}


def test_layer_lr_patterns_exact_names_win_and_groups_merge():
    groups = param_groups(model("sp"), "sgd", lr=0.1, layer_lr={"layers.*": 2.0, "layers.1.weight": 5.0})
    lr = per_tensor(groups, "lr")
    assert lr["layers.0.weight"] == pytest.approx(0.2) and lr["layers.1.weight"] == pytest.approx(0.5)
    assert lr["readout.weight"] == pytest.approx(0.1)
    assert len(groups) == 3  # SP: one lr per constant, tensors with equal hyperparameters share a group


def test_torch_optimizers_and_errors():
    m = model()
    opt = pl.optimizer(m, "adamw", lr=1e-3, weight_decay=0.01, betas=(0.8, 0.9))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.9)
    assert isinstance(pl.optimizer(m, "sgd", lr=0.1, momentum=0.9), torch.optim.SGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        pl.optimizer(m, "lamb")
    with pytest.raises(ValueError, match="lr must be positive"):
        pl.optimizer(m, "sgd", lr=0.0)
    with pytest.raises(TypeError, match="finite"):
        pl.optimizer(m, "sgd", lr=math.nan)
    with pytest.raises(ValueError, match="no paramlab plan"):
        pl.optimizer(torch.nn.Linear(2, 2), "sgd", lr=0.1)
    m.extra = torch.nn.Linear(2, 2)  # added after parameterize: not in the plan
    with pytest.raises(ValueError, match="not in the model's plan"):
        pl.optimizer(m, "sgd", lr=0.1)


# -- learning-rate loops, weight-decay exclusion -----------------------------------------------------


def model64(scheme="mup"):
    """m = 4 in float64, for measuring learning rates by a step."""
    return pl.mlp(6, 3, 128, depth=2, scheme=scheme, base_width=32, dtype=torch.float64, seed=0)


def measured_lrs(net, opt):
    """The lr each tensor actually trains with: one SGD step on a gradient of ones moves it by -lr."""
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return {n: float((before[n] - p.detach()).mean()) for n, p in net.named_parameters()}


def nanogpt_loop(opt, it):
    for g in opt.param_groups:
        g["lr"] = 0.3 * (it + 1) / 5  # nanoGPT's warmup: one absolute lr written into every group


def scheduled(opt, sched):
    def step(it):
        opt.step()  # no gradients yet: nothing moves; schedulers expect a step before theirs
        sched.step()
    return step


LOOPS = {
    "nanogpt": lambda opt: (lambda it: nanogpt_loop(opt, it)),
    "onecycle": lambda opt: scheduled(opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=20)),
    "cyclic": lambda opt: scheduled(opt, torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.3, step_size_up=3)),
}


@pytest.mark.parametrize("loop", list(LOOPS))
def test_lr_loops_keep_every_per_tensor_ratio(loop):
    """After the loop each tensor trains with lr * m^-c (muP SGD: input and biases x4, hidden x1, readout x4)."""
    net = model64()
    plan = pl.get_plan(net)
    opt = pl.optimizer(net, "sgd", lr=0.1)
    step = LOOPS[loop](opt)
    for it in range(4):
        step(it)
    base = opt.param_groups[0]["lr"]
    assert all(g["lr"] == base for g in opt.param_groups)  # the loop set one base lr
    got = measured_lrs(net, opt)
    want = {t.name: base * t.lr_mult("sgd") for t in plan}
    assert got == pytest.approx(want, rel=1e-9)
    assert {round(v / base, 9) for v in got.values()} == {1.0, 4.0}
    # negative control: the same loop on a plain torch optimizer of paramlab's groups erases the ratios
    net2 = model64()
    plain = torch.optim.SGD(pl.param_groups(net2, "sgd", lr=0.1), lr=0.1)
    step = LOOPS[loop](plain)
    for it in range(4):
        step(it)
    assert measured_lrs(net2, plain) != pytest.approx(want, rel=1e-3)


def test_optimizer_state_dict_round_trip_keeps_base_lr_and_multipliers():
    net = model64()
    opt = pl.optimizer(net, "adam", lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    opt.step()
    sched.step()
    again = pl.optimizer(net, "adam", lr=1e-3)
    again.load_state_dict(opt.state_dict())
    assert pl.effective_lrs(again) == pl.effective_lrs(opt) == pytest.approx(
        {t.name: 5e-4 * t.lr_mult("adam") for t in pl.get_plan(net)})


def test_lr_mult_is_right_for_every_optimizer_name():
    t = pl.get_plan(model64())["layers.1.weight"]  # muP hidden at m = 4: SGD 1, Adam 1/4
    assert [t.lr_mult(n) for n in ("sgd", "momentum", "SGD")] == [1.0, 1.0, 1.0]
    assert [t.lr_mult(n) for n in ("adam", "adamw", "AdamW")] == [0.25, 0.25, 0.25]
    assert t.lr_mult("lion") == 0.25  # sign updates: Adam's exponent
    with pytest.raises(ValueError, match="unknown optimizer"):
        t.lr_mult("lamb")
    with pytest.raises(ValueError, match="depends on the tensor.s role and the scheme"):
        t.lr_mult("adafactor")


def decays(net, **kw):
    return {n: g["weight_decay"] for g in pl.optimizer(net, "adamw", lr=1e-3, weight_decay=0.1, **kw).param_groups
            for n in g["names"]}


def test_weight_decay_exclusion_keeps_the_schemes_wd_scaling():
    """Decayed tensors keep wd * m^c (per-step decay lr_w * wd_w = lr * wd at every width); excluded ones get 0."""
    lm = pl.transformer(32, 128, depth=1, n_heads=4, scheme="mup", base_width=32, bias=True, tied=True, seed=0)
    plan = pl.get_plan(lm)
    scaled = {t.name: 0.1 / t.lr_mult("adam") for t in plan}
    assert decays(lm) == pytest.approx(scaled)
    mingpt = decays(lm, no_decay="mingpt")  # biases, norm parameters, embeddings
    for t in plan:
        excluded = t.kind in ("bias", "norm", "embedding")
        assert mingpt[t.name] == (0.0 if excluded else pytest.approx(scaled[t.name])), t.name
    assert mingpt["blocks.0.attn.q.weight"] == pytest.approx(0.4) and mingpt["tok_emb.weight"] == 0.0
    nanogpt = decays(lm, no_decay="nanogpt")  # tensors with < 2 dims; nanoGPT decays its (tied) embedding
    assert nanogpt["tok_emb.weight"] == pytest.approx(0.1) and nanogpt["blocks.0.ln1.weight"] == 0.0
    assert decays(lm, no_decay=["blocks.*.mlp.*"])["blocks.0.mlp.fc.weight"] == 0.0
    with pytest.raises(ValueError, match="neither a preset"):
        decays(lm, no_decay="biases")
