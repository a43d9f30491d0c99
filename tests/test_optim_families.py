"""Optimizer families (sgd, adam, sign/Lion, adafactor, spectral/Muon): per-tensor lrs against the
formulas written out by hand in float64, every scheme; the Muon hybrid against torch.optim.Muon + AdamW
stepped by hand and Lion against the paper's algorithm (negative controls: a 0.1% lr change, swapped
betas); schemes coincide at the base width under every family; the Adafactor cap keeps ratios;
decoupled_wd; bad input refused before any step."""

import math

import pytest
import torch

import paramlab as pl
from paramlab.lion import Lion
from paramlab.optim import tensor_hparams, trained_families
from paramlab.schemes import FAMILIES, PRESETS

WIDTH, BASE = 128, 32
M = WIDTH / BASE
ROLE = {"layers.0.weight": "input", "layers.1.weight": "hidden", "layers.2.weight": "hidden",
        "readout.weight": "output", "layers.0.bias": "vector", "readout.bias": "scalar"}


def mlp(scheme="mup", width=WIDTH, **kw):
    return pl.mlp(6, 3, width, depth=3, scheme=scheme, base_width=BASE, dtype=torch.float64, seed=0, **kw)


# -- the hand computation: each family's exponent from the scheme's columns, written out --------------

# (fan-out, fan-in) width exponents of the matrix roles; spectral rules only for these
DIMS = {"input": (1, 0), "hidden": (1, 1), "output": (0, 1)}
# SP-type schemes train every tensor at one lr per family
GLOBAL = {"sp": dict(sgd=0, adam=0, sign=0, adafactor=0, spectral=0, **{"spectral-rms": 0}),
          "sp-stable": dict(sgd=1, adam=1.5, sign=1.5, adafactor=0.5, spectral=0.5, **{"spectral-rms": 1})}


def hand_c(scheme, role, family):
    s = pl.get_scheme(scheme)
    if family.startswith("spectral") and role not in DIMS:
        return None
    if scheme in GLOBAL:
        return GLOBAL[scheme][family]
    e = s[role]
    if family == "sgd":
        return e.c_sgd
    if family in ("adam", "sign"):  # Lion's sign step has Adam's size
        return e.c_adam
    if family == "adafactor":  # step = rho * RMS(w), RMS(w) ~ m^-b
        return e.c_adam - e.b
    out, inn = DIMS[role]
    torch_factor = max(0, out - inn) / 2 if family == "spectral" else max(out, inn) / 2  # sqrt(max(1,A/B)) | 0.2 sqrt(max(A,B))
    return e.c_adam - (out + inn) / 2 + torch_factor  # match the Adam step's spectral norm ~ m^-(a+c) m^((out+in)/2)


@pytest.mark.parametrize("scheme", list(PRESETS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_per_tensor_lr_is_the_hand_computation(scheme, family):
    net = mlp(scheme)
    names = [n for n in ROLE if hand_c(scheme, ROLE[n], family) is not None]
    hp = tensor_hparams(net, family, lr=0.1, names=set(names))
    assert set(hp) == set(names)
    for n in names:
        m = 1.0 if ROLE[n] == "scalar" else M
        assert hp[n]["lr"] == pytest.approx(0.1 * m ** -hand_c(scheme, ROLE[n], family), rel=1e-14, abs=0), (n, family)
        assert hp[n]["family"] == family


def test_spot_values_under_mup():
    """muP at m = 4: Muon ('original') trains hidden matrices at the base lr and the readout at 2x (m^1/2 in
    mup's multiplier form); 'match_rms_adamw' needs 1/2 on hidden; Adafactor 1/2 on hidden; Lion Adam's 1/4."""
    net = mlp("mup")
    lr = lambda fam, n: tensor_hparams(net, fam, lr=1.0, names={n})[n]["lr"]  # noqa: E731
    assert lr("spectral", "layers.1.weight") == 1.0 and lr("spectral", "readout.weight") == 2.0
    assert lr("spectral-rms", "layers.1.weight") == 0.5 and lr("adafactor", "layers.1.weight") == 0.5
    assert lr("sign", "layers.1.weight") == 0.25 and lr("sign", "layers.0.weight") == 1.0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_schemes_coincide_at_the_base_width(family):
    """At m = 1 every scheme trains every tensor at the base lr, under every family."""
    for scheme in PRESETS:
        net = mlp(scheme, width=BASE)
        hp = tensor_hparams(net, family, lr=0.1, eps=None,
                            names={n for n in ROLE if hand_c(scheme, ROLE[n], family) is not None})
        assert {h["lr"] for h in hp.values()} == {0.1}, scheme


@pytest.mark.parametrize("name", ["lion", "adafactor", "muon", "sgd", "adamw"])
def test_schemes_train_identically_at_the_base_width(name):
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    finals = {}
    for scheme in ("sp", "mup", "mf", "ntk"):
        net = mlp(scheme, width=BASE)
        opt = pl.optimizer(net, name, lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
        finals[scheme] = net(x).detach()
    for scheme, out in finals.items():
        torch.testing.assert_close(out, finals["sp"], rtol=1e-12, atol=1e-13, msg=scheme)


# -- Muon hybrid vs torch.optim.Muon + AdamW by hand ---------------------------------------------------


def _train(net, opt, steps=4, sched=None):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, dtype=torch.float64, generator=g)
        y = torch.randn(8, 3, dtype=torch.float64, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def _muon_by_hand(net, lr, hidden_lr_factor, wd=0.0, muon_scale=1.0):
    """torch.optim.Muon over the hidden matrices at lr * m^-c_spectral (by hand), AdamW over the rest
    at the scheme's Adam lr per tensor (MF: input 1, vector 1, readout 1, readout bias 1), eps fixed."""
    named = dict(net.named_parameters())
    hidden = [named["layers.1.weight"], named["layers.2.weight"]]
    rest = [p for n, p in named.items() if n not in ("layers.1.weight", "layers.2.weight")]
    muon = torch.optim.Muon(hidden, lr=lr * hidden_lr_factor * muon_scale, weight_decay=wd, momentum=0.95,
                            nesterov=True)
    adamw = torch.optim.AdamW(rest, lr=lr, weight_decay=wd, eps=1e-8)
    for o in (muon, adamw):
        o.paramlab_plan_ok = True  # stepped by hand on purpose

    class Both:
        def zero_grad(self):
            muon.zero_grad()
            adamw.zero_grad()

        def step(self):
            adamw.step()
            muon.step()

    return Both()


def test_muon_hybrid_equals_torch_muon_and_adamw_stepped_by_hand():
    """MF at m = 4: spectral hidden c = c_adam - 1 = -1/2, so Muon's lr is 2x the base; AdamW elsewhere at 1x."""
    lr = 0.01
    a, b, c = mlp("mf"), mlp("mf"), mlp("mf")
    ours = _train(a, pl.optimizer(a, "muon", lr=lr, eps_mode="none"))
    hand = _train(b, _muon_by_hand(b, lr, M ** 0.5))
    torch.testing.assert_close(ours, hand, rtol=0, atol=0)
    off = _train(c, _muon_by_hand(c, lr, M ** 0.5, muon_scale=1.001))  # negative control: Muon lr +0.1%
    assert (off - hand).abs().max() > 1e-6


def test_muon_hybrid_keeps_every_ratio_under_schedulers_and_lr_loops():
    net = mlp("mup")
    opt = pl.optimizer(net, "muon", lr=0.02, adam_lr=0.004)
    want = {n: v / 0.02 for n, v in pl.effective_lrs(opt).items()}
    assert want["layers.1.weight"] == 1.0 and want["layers.0.weight"] == 0.2 and want["readout.weight"] == 0.2
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] * 3 for g in opt.param_groups], total_steps=10,
                                                cycle_momentum=False)  # Muon's momentum and AdamW's betas: no one beta1 to cycle
    _train(net, opt, steps=3, sched=sched)
    eff = pl.effective_lrs(opt)
    ratio = {n: eff[n] / eff["layers.1.weight"] for n in eff}
    assert ratio == pytest.approx(want, rel=1e-12)
    for g in opt.param_groups:  # nanoGPT's loop writes one absolute lr into every group: that is the base lr
        g["lr"] = 0.5
    eff = pl.effective_lrs(opt)  # the muP hybrid: Muon hidden x1, AdamW x adam_lr / lr = 0.2 everywhere else
    assert eff["layers.1.weight"] == 0.5 and {eff[n] for n in eff if n not in ("layers.1.weight", "layers.2.weight")} == {0.1}
    again = pl.optimizer(net, "muon", lr=0.02, adam_lr=0.004)
    again.load_state_dict(opt.state_dict())
    assert pl.effective_lrs(again) == pl.effective_lrs(opt) and len(again.state) == len(list(net.parameters()))


def test_match_rms_adamw_is_corrected_not_refused():
    """torch's 0.2 sqrt(max(A, B)) grows like m^1/2 on hidden matrices: paramlab's lr carries m^-1/2, so the
    product (the step torch takes) is width-free, as 'original' is."""
    steps = {}
    for width in (64, 256):
        net = mlp("mup", width=width)
        for fn in ("original", "match_rms_adamw"):
            opt = pl.optimizer(net, "muon", lr=0.01, adjust_lr_fn=fn)
            lr = pl.effective_lrs(opt)["layers.1.weight"]
            a = 0.2 * math.sqrt(width) if fn == "match_rms_adamw" else 1.0  # torch's _adjust_lr on (width, width)
            steps[width, fn] = lr * a
    assert steps[256, "original"] == steps[64, "original"]
    assert steps[256, "match_rms_adamw"] == pytest.approx(steps[64, "match_rms_adamw"], rel=1e-12)


# -- Lion vs the paper's algorithm ---------------------------------------------------------------------


def lion_by_hand(params, grads_seq, lr, beta1, beta2, wd):
    """Chen et al. 2023, Algorithm 2, in float64."""
    ms = [torch.zeros_like(p) for p in params]
    for grads in grads_seq:
        for p, g, m in zip(params, grads, ms):
            c = beta1 * m + (1 - beta1) * g
            p.sub_(lr * (torch.sign(c) + wd * p))
            m.mul_(beta2).add_((1 - beta2) * g)
    return params


def test_lion_is_the_papers_algorithm():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, 4, dtype=torch.float64, generator=g)
    grads = [[torch.randn(5, 4, dtype=torch.float64, generator=g)] for _ in range(6)]
    p = torch.nn.Parameter(p0.clone())
    opt = Lion([p], lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    for (gr,) in grads:
        p.grad = gr.clone()
        opt.step()
    want = lion_by_hand([p0.clone()], grads, 0.01, 0.9, 0.99, 0.1)[0]
    torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-15)
    swapped = lion_by_hand([p0.clone()], grads, 0.01, 0.99, 0.9, 0.1)[0]  # negative control: betas swapped
    assert (swapped - want).abs().max() > 1e-3


# -- Adafactor: torch's min(lr, 1/sqrt(t)) cap acts on the base lr -----------------------------------------


def test_adafactor_cap_keeps_the_per_tensor_ratio():
    """lr 0.5 is capped from t = 5 on (1/sqrt(5) < 0.5): every tensor gets lr_mult * min(lr, 1/sqrt(t)),
    checked against torch.optim.Adafactor whose group lrs are set by hand each step."""
    a, b = mlp("mup"), mlp("mup")
    opt = pl.optimizer(a, "adafactor", lr=0.5)
    hand = torch.optim.Adafactor(pl.param_groups(b, "adafactor", lr=0.5, eps=(None, 1e-3)), lr=0.5)
    mults = [g["lr_mult"] for g in hand.param_groups]
    assert sorted(set(mults)) == [0.5, 1.0]  # muP hidden: c = c_adam - b = 1/2 at m = 4

    class ByHand:
        t = 0

        def zero_grad(self):
            hand.zero_grad()

        def step(self):
            self.t += 1
            for grp, mult in zip(hand.param_groups, mults):
                grp["lr"] = mult * min(0.5, self.t ** -0.5)
            hand.step()

    hand.paramlab_plan_ok = True
    torch.testing.assert_close(_train(a, opt, steps=8), _train(b, ByHand(), steps=8), rtol=0, atol=0)


# -- weight decay ----------------------------------------------------------------------------------------


def test_decoupled_wd_keeps_the_hidden_decay_fixed_like_nanogpt_mup_master():
    """nanoGPT-mup master (written out): AdamW, hidden lr / m, ONE weight decay for every decayed group.
    paramlab's default is mup's MuAdam / CompleteP: wd * m on the hidden matrices (lr * wd width-free)."""
    lm = pl.transformer(32, 128, depth=1, n_heads=4, scheme="mup", base_width=32, seed=0)
    plan = pl.get_plan(lm)
    fixed = tensor_hparams(lm, "adamw", lr=1e-3, weight_decay=0.1, decoupled_wd=True)
    scaled = tensor_hparams(lm, "adamw", lr=1e-3, weight_decay=0.1)
    for n, h in fixed.items():
        assert h["lr"] == 1e-3 * plan.lr_mult(n, "adam") and h["weight_decay"] == 0.1, n
        assert scaled[n]["weight_decay"] == pytest.approx(0.1 / plan.lr_mult(n, "adam"), rel=1e-15)
    assert scaled["blocks.0.attn.q.weight"]["weight_decay"] == pytest.approx(0.4)  # negative control: differs
    opt = pl.optimizer(lm, "muon", lr=0.02, weight_decay=0.1, decoupled_wd=True)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.1}


# -- mixes, impl=, bad input -----------------------------------------------------------------------------


def test_mix_by_role_and_pattern_and_impl():
    net = mlp("mup")
    opt = pl.optimizer(net, {"layers.2.*": "sgd", "hidden": "lion", "*": "adam"}, lr=1e-3)
    fams = trained_families(opt)
    assert fams["layers.1.weight"] == "sign" and fams["layers.2.weight"] == "sgd" and fams["layers.2.bias"] == "sgd"
    assert fams["readout.weight"] == "adam"
    eff = pl.effective_lrs(opt)
    assert eff["layers.1.weight"] == 1e-3 / 4 and eff["layers.2.weight"] == 1e-3  # Lion: Adam's 1/m; SGD: 1
    nadam = pl.optimizer(net, "adam", lr=1e-3, impl=torch.optim.NAdam, betas=(0.8, 0.9))
    assert isinstance(nadam, torch.optim.NAdam) and nadam.defaults["betas"] == (0.8, 0.9)
    assert pl.effective_lrs(nadam)["layers.1.weight"] == 1e-3 / 4


def test_bad_input_is_refused_before_any_step():
    net = mlp("mup")
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        pl.optimizer(net, "lamb")
    with pytest.raises(ValueError, match="no 2-D hidden"):
        pl.optimizer(pl.mlp(6, 3, 64, depth=1, scheme="mup", base_width=32), "muon")  # input + readout only
    with pytest.raises(ValueError, match=r"\['eps'\] make\(s\) no sense for lion"):
        pl.optimizer(net, "lion", eps=1e-8)
    with pytest.raises(ValueError, match=r"\['betas'\] make\(s\) no sense for adafactor"):
        pl.optimizer(net, "adafactor", betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="betas must be two numbers"):
        pl.optimizer(net, "lion", betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="is never used"):
        pl.optimizer(net, "adafactor", lr=2.0)
    with pytest.raises(ValueError, match="eps2"):
        pl.optimizer(net, "adafactor", eps=(None, 0.0))
    with pytest.raises(ValueError, match="a pair"):
        pl.optimizer(net, "adafactor", eps=1e-3)
    with pytest.raises(ValueError, match="Muon takes 2-D matrices"):
        pl.optimizer(net, {"*": "muon"})
    lm = pl.transformer(32, 64, depth=1, n_heads=4, scheme="mup", base_width=32, seed=0)
    with pytest.raises(ValueError, match="not stored \\(fan_out, fan_in\\)"):
        pl.optimizer(lm, {"tok_emb.weight": "muon", "*": "adamw"})
    with pytest.raises(ValueError, match="adjust_lr_fn must be"):
        pl.optimizer(net, "muon", adjust_lr_fn="sqrt")
    with pytest.raises(ValueError, match="ambiguous"):
        pl.optimizer(net, "muon", foreach=False)
    with pytest.raises(ValueError, match="adam_lr"):
        pl.optimizer(net, "lion", adam_lr=1e-3)


def test_the_role_table_shows_each_familys_exponents():
    rows = {r["name"]: r for r in pl.get_plan(mlp("mup")).rows("muon")}
    assert rows["layers.1.weight"]["c"] == 0 and rows["readout.weight"]["lr_mult"] == 2.0
    assert rows["layers.0.bias"]["c"] is None  # a vector: Muon cannot train it
    assert "c_muon" in pl.get_plan(mlp("mup")).table("muon")


def test_depth_rules_give_normalized_families_adams_in_block_exponent():
    net = pl.transformer(32, 64, depth=4, n_heads=4, scheme="mup", base_width=32, seed=0, depth_scaling="depth-mup",
                         base_depth=2)
    name = "blocks.0.attn.q.weight"
    lrs = {f: tensor_hparams(net, f, lr=1.0, names={name})[name]["lr"] for f in ("adam", "sign", "sgd")}
    assert lrs["sign"] == lrs["adam"] == pytest.approx(2 ** -0.5 / 2)  # width 1/m, depth (L/L0)^(1/2 - 1)
    assert lrs["sgd"] == 1.0  # SGD under depth-muP: no depth factor (2 alpha - 1 = 0), muP hidden SGD lr 1


def test_schemes_v_prints_every_familys_exponents(capsys):
    from paramlab.cli import main

    main(["schemes", "-v", "mup", "sp"])
    out = capsys.readouterr().out
    for fam in FAMILIES:
        assert f"\n  {fam:<13} " in out, fam
    mup = out[out.index("mup: maximal"):]
    assert "  spectral            0       0    -0.5       -       -" in mup  # hidden width-free, readout m^+1/2
    assert "one global lr per family" in out[out.index("sp: standard"):]


def test_a_uniform_shift_keeps_a_global_lr_scheme_global():
    """Shifting SP by t keeps every tensor's effective step: SGD -2t, Adam-like -t, Adafactor 0 (a + b fixed)."""
    sp, shifted = pl.get_scheme("sp"), pl.get_scheme("sp").shift(0.5)
    for fam in FAMILIES:
        for role in ("input", "hidden", "output"):
            c0, c1 = sp.lr_exponent(role, fam), shifted.lr_exponent(role, fam)
            step = {"sgd": 2, "adafactor": 0}.get(fam, 1)
            assert c1 == c0 - step * 0.5, (fam, role)


def test_mix_key_that_matches_nothing_is_refused():
    """{'hidden': 'muon', '*': 'adamw'} on a model with no hidden tensor would silently be all AdamW: refused, as
    'muon' alone is; a key naming no tensor (a typo'd pattern) likewise. Negative control: the same mix on a model
    with hidden matrices builds, and its Muon part trains them."""
    shallow = pl.mlp(8, 3, 64, depth=1, scheme="mup", base_width=32, seed=0)  # input and readout only
    for mix in ({"hidden": "muon", "*": "adamw"}, {"hidden": "muonx", "*": "adamw"}, {"layer.*": "lion", "*": "adam"}):
        with pytest.raises(ValueError, match=r"the mix key .* matches no trainable tensor .* would train nothing"):
            pl.optimizer(shallow, mix, lr=1e-3)
    net = mlp("mup")
    fams = trained_families(pl.optimizer(net, {"hidden": "muon", "*": "adamw"}, lr=1e-3))
    assert fams["layers.1.weight"] == "spectral" and fams["readout.weight"] == "adam"
