import pytest

import paramlab as pl
from paramlab.schemes import PRESETS, ROLES, Exponents, get_scheme, lazy_rich

COLS = ("input", "hidden", "output")


def inv(name, key):
    s = get_scheme(name).invariants()
    return tuple(s[r][key] for r in COLS)


# docs/theory.md §2.5 invariant table (exponents of 1/m: [input, hidden, output]).
@pytest.mark.parametrize("name,std,sgd,adam", [
    ("sp", (0, .5, .5), (0, 0, 0), (0, 0, 0)),
    ("ntk", (0, .5, .5), (0, 1, 1), (.5, 1.5, 1)),
    ("mf", (0, .5, 1), (-1, 0, 1), (0, 1, 1)),
    ("mup", (0, .5, 1), (-1, 0, 1), (0, 1, 1)),
    ("sp-stable", (0, .5, .5), (1, 1, 1), (1.5, 1.5, 1.5)),
])
def test_preset_invariants_match_design_table(name, std, sgd, adam):
    assert inv(name, "std") == std and inv(name, "sgd") == sgd and inv(name, "adam") == adam
    # biases and norm gains follow the input column
    assert get_scheme(name)["vector"].invariants() == get_scheme(name)["input"].invariants()


def test_equivalence_classes():
    for opt in ("sgd", "adam", None):
        assert pl.equivalent("mf", "mup", optimizer=opt)
        assert not pl.equivalent("ntk", "sp", optimizer=opt)
    # NTK is SP with per-layer SGD lr (1, 1/m, 1/m) ...
    sp_lr = pl.custom("sp-lr", input=(0, 0, 0, 0), hidden=(0, .5, 1, 0), output=(0, .5, 1, 0))
    assert sp_lr.equivalent("ntk", optimizer="sgd") and not sp_lr.equivalent("ntk", optimizer="adam")
    # ... and SP with its stable lr is a different kernel-regime scheme
    assert not pl.equivalent("sp-stable", "ntk", optimizer="sgd")


@pytest.mark.parametrize("name", list(PRESETS))
def test_symmetry_and_canonical_form(name):
    s = get_scheme(name)
    c = s.canonical()
    assert all(c[r].a == 0 for r in ROLES)
    assert c.equivalent(s) and s.shift(0.37).equivalent(s)
    assert s.shift({"hidden": 0.25}).equivalent(s)
    # canonical form is the invariants themselves
    for r in ("input", "hidden", "output", "vector"):
        assert (c[r].b, c[r].c_sgd, c[r].c_adam) == pytest.approx(s[r].invariants())
    # a shift that is not the symmetry changes the dynamics
    moved = pl.Scheme(**{**s.__dict__, "hidden": Exponents(s.hidden.a + .5, s.hidden.b, s.hidden.c_sgd, s.hidden.c_adam)})
    assert not moved.equivalent(s)


def test_predicted_feature_update_exponent_tp4_table1():
    # TP4 Table 1 / docs/theory.md §3.1 worked values of r
    assert {n: get_scheme(n).predicted_r() for n in PRESETS} == {
        "sp": -1, "sp-stable": .5, "ntk": .5, "mf": 0, "mup": 0}


@pytest.mark.parametrize("alpha", [0, .25, .5, .75, 1])
def test_lazy_rich_interpolates_kernel_to_feature_learning(alpha):
    s = lazy_rich(alpha)
    assert s.predicted_r() == pytest.approx((1 - alpha) / 2)
    assert s.invariants()["output"]["std"] == pytest.approx(.5 + alpha / 2)
    assert s.invariants()["output"]["sgd"] == pytest.approx(1)  # readout updated maximally at every alpha
    assert get_scheme(f"lazy-rich-{alpha}") == s
    if alpha == 0:
        assert s.equivalent("ntk")
    if alpha == 1:
        assert s.equivalent("mup")


def test_bad_scheme_input():
    with pytest.raises(ValueError, match="known schemes are sp, sp-stable, ntk, mf, mup"):
        get_scheme("mu-p")
    with pytest.raises(TypeError):
        get_scheme(3)
    with pytest.raises(ValueError, match="alpha must be in"):
        lazy_rich(1.5)
    with pytest.raises(ValueError, match="unknown roles"):
        pl.custom("x", input=(0, 0, 0, 0), hidden=(0, 0, 0, 0), output=(0, 0, 0, 0), readout=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="needs exponents"):
        pl.custom("x", input=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="finite"):
        pl.custom("x", input=(float("nan"), 0, 0, 0), hidden=(0, 0, 0, 0), output=(0, 0, 0, 0))
    with pytest.raises(KeyError, match="unknown role"):
        get_scheme("mup")["readout"]


def test_describe_prints_the_exponents():
    assert "c_adam" in get_scheme("ntk").describe()


def test_optimizer_family_of_names_and_optimizers():
    import torch

    from paramlab.schemes import optimizer_family

    assert [optimizer_family(n) for n in ("sgd", "Momentum", "adam", "AdamW")] == ["sgd", "sgd", "adam", "adam"]
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert optimizer_family(torch.optim.SGD(p, lr=0.1)) == "sgd"
    assert optimizer_family(torch.optim.AdamW(p)) == "adam" and optimizer_family(torch.optim.RMSprop(p)) == "adam"

    class MyAdam(torch.optim.Adam):  # subclasses keep their family
        pass

    assert optimizer_family(MyAdam(p)) == "adam"
    assert [optimizer_family(n) for n in ("lion", "adafactor", "muon")] == ["sign", "adafactor", "spectral"]
    assert optimizer_family(torch.optim.Adafactor(p)) == "adafactor"
    w = [torch.nn.Parameter(torch.zeros(2, 2))]
    assert optimizer_family(torch.optim.Muon(w)) == "spectral"  # adjust_lr_fn decides the exponents
    assert optimizer_family(torch.optim.Muon(w, adjust_lr_fn="match_rms_adamw")) == "spectral-rms"
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        optimizer_family("lamb")
    with pytest.raises(ValueError, match="impl=LBFGS"):  # an unknown class is refused, not guessed
        optimizer_family(torch.optim.LBFGS(p))
