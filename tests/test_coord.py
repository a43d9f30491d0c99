"""Tests for paramlab.measure.coord: verdicts of the coordinate check, and the one-step width
exponents of THEORY.md §3.3 (SGD and Adam tables) measured with it."""

import numpy as np
import pytest
import torch
from torch import nn

import paramlab as pl
from paramlab.measure.coord import coord_check
from paramlab.measure.coord_predict import plan_tensor_infos, predict_slopes
from paramlab.measure.mup_shapes import mup_tensor_infos
from paramlab.report import plot_coord, slope_table

F64 = torch.float64
D = 16


def batch(n=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=dtype), torch.randn(n, 1, generator=g, dtype=dtype)


def factory(scheme, depth=2, activation="tanh", dtype=None):
    return lambda w: pl.mlp(D, 1, w, depth=depth, scheme=scheme, base_width=64, activation=activation, dtype=dtype)


WIDTHS = [64, 128, 256, 512, 1024]


# -- verdicts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["mup", "mf"])
def test_mup_and_mf_pass_the_coord_check(scheme):
    x, y = batch()
    res = coord_check(factory(scheme), WIDTHS, x, y, optimizer="sgd", lr=0.1, steps=3, seeds=3, quantities="all")
    assert res.passed, slope_table(res)
    assert all(res.verdicts().values())
    # what is checked: activations of every module at every step, and every weight
    assert {"layers.0", "act[0]", "layers.1", "act[1]", "readout"} <= set(res.verdicts())
    assert {"layers.1.weight", "readout.weight"} <= set(res.verdicts())
    fit = res.fit("layers.1", "dact/rms", 3)
    assert fit["predicted"] == 0.0 and abs(fit["slope"]) < fit["tol"] == 0.15
    # the spectral condition (THEORY.md §5.4): ||dW||_2 ~ sqrt(fan_out / fan_in)
    assert res.fit("layers.0.weight", "dW/spec", 3)["predicted"] == 0.5
    assert res.fit("layers.1.weight", "dW/spec", 3)["predicted"] == 0.0
    assert res.fit("readout.weight", "dW/spec", 3)["predicted"] == -0.5
    assert res.fit("readout", "act/rms", 0)["predicted"] == -0.5  # muP logits vanish at init


def test_mup_and_mf_records_coincide():
    """Same invariants, same seed: the two schemes train the same network (abc symmetry)."""
    x, y = batch()
    kw = dict(lr=0.1, steps=2, seeds=1, quantities=("act", "dact"))
    a = coord_check(factory("mup"), [64, 256], x, y, **kw)
    b = coord_check(factory("mf"), [64, 256], x, y, **kw)
    va = np.array([r["value"] for r in a.records])
    vb = np.array([r["value"] for r in b.records])
    assert np.allclose(va, vb, rtol=1e-4)


def test_sp_at_a_fixed_large_lr_fails_with_growing_slopes():
    x, y = batch()
    res = coord_check(factory("sp"), WIDTHS, x, y, optimizer="sgd", lr=0.1, steps=3, seeds=3)
    assert not res.passed
    bad = res.failures()
    assert any(f["name"] == "readout" and f["stable"] is False for f in bad)
    assert res.slope("readout", "act/rms", 3) > 0.5  # logits blow up
    assert res.slope("layers.1", "dact/rms", 1) > 0.25  # hidden features after one step: ~ n^(1/2)
    assert res.fit("layers.1", "dact/rms", 1)["predicted"] == 0.5
    assert res.fit("readout", "act/rms", 0)["passed"]  # SP is fine at init
    assert not res.verdicts()["readout"]


class MuMLP(nn.Module):
    """A model written for the `mup` package: MuReadout, set_base_shapes, MuSGD."""

    def __init__(self, width):
        super().__init__()
        import mup

        self.fc1 = nn.Linear(D, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.Tanh()
        self.readout = mup.MuReadout(width, 1)

    def forward(self, x):
        return self.readout(self.act(self.fc2(self.act(self.fc1(x)))))


def test_coord_check_runs_on_a_mup_package_model_and_it_passes():
    mup = pytest.importorskip("mup")

    def make(width):
        model = MuMLP(width)
        mup.set_base_shapes(model, MuMLP(64), delta=MuMLP(128))
        return model

    infos = mup_tensor_infos(make(256))
    assert {n: t.role for n, t in infos.items()} == {
        "fc1.weight": "input", "fc1.bias": "vector", "fc2.weight": "hidden", "fc2.bias": "vector",
        "readout.weight": "output", "readout.bias": "scalar"}
    assert infos["readout.weight"].mult == pytest.approx(0.25)  # output_mult / width_mult
    x, y = batch()
    res = coord_check(make, WIDTHS, x, y, optimizer=lambda m: mup.MuSGD(m.parameters(), lr=0.1), steps=3,
                      seeds=3, quantities="all")
    assert res.family == "sgd"
    assert res.passed, slope_table(res)
    assert res.fit("fc2", "dact/rms", 3)["predicted"] == 0.0
    assert res.fit("fc2.weight", "dW/spec", 3)["predicted"] == 0.0


def test_tables_plots_user_predictions_and_errors(tmp_path):
    x, y = batch(8)
    res = coord_check(factory("ntk"), [64, 128, 256], x, y, steps=1, seeds=1, quantities=("act", "dW"),
                      predicted={("layers.1", "act/rms"): 1.0}, tol={"act": 0.2, "dW": 0.3})
    assert res.fit("layers.1", "act/rms", 0)["predicted"] == 1.0 and not res.fit("layers.1", "act/rms", 0)["passed"]
    assert res.fit("layers.1", "act/rms", 0)["tol"] == 0.2
    assert res.fit("layers.1.weight", "dW/rms", 1)["tol"] == 0.3
    table = slope_table(res)
    assert table.startswith("| name | quantity | step | slope | predicted | tol | verdict |")
    assert "FAIL" in table and "layers.1.weight" in table
    assert "slope" in slope_table(res, fmt="text").splitlines()[0]
    plot_coord(res, tmp_path / "coord.png")
    plot_coord(res, tmp_path / "dw.png", quantity="dW/spec")
    assert (tmp_path / "coord.png").stat().st_size > 0 and (tmp_path / "dw.png").stat().st_size > 0
    assert set(res.frame().columns) == {"width", "seed", "step", "name", "quantity", "value"}
    with pytest.raises(ValueError, match="at least 2 widths"):
        coord_check(factory("ntk"), [64], x, y)
    with pytest.raises(ValueError, match="unknown quantity"):
        coord_check(factory("ntk"), [64, 128], x, y, quantities=("activations",))
    with pytest.raises(ValueError, match="unknown optimizer"):
        coord_check(factory("ntk"), [64, 128], x, y, optimizer="lion")


def test_xent_loss_and_adam():
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(16, D, generator=g), torch.randint(0, 4, (16,), generator=g)
    make = lambda w: pl.mlp(D, 4, w, depth=2, scheme="mup", base_width=64, activation="tanh")  # noqa: E731
    res = coord_check(make, [64, 128, 256], x, labels, optimizer="adam", lr=1e-2, loss="xent", steps=2, seeds=2,
                      quantities=("act", "dact"))
    assert res.family == "adam"
    assert res.fit("layers.1", "dact/rms", 2)["predicted"] == 0.0


# -- what mup records: the same values (float64), and what is opt-in -------------------------------------


class MupNet(nn.Module):
    """float64, two distinct activations (one call each, as mup names them), MuReadout with 4 classes."""

    def __init__(self, width, device=None):
        import mup

        super().__init__()
        kw = dict(dtype=F64, device=device)
        self.fc1, self.act1 = nn.Linear(D, width, **kw), nn.Tanh()
        self.fc2, self.act2 = nn.Linear(width, width, **kw), nn.Tanh()
        self.readout = mup.MuReadout(width, 4, **kw)

    def forward(self, x):
        return self.readout(self.act2(self.fc2(self.act1(self.fc1(x)))))


def test_default_quantities_equal_mups_statistics_in_float64():
    """mup's get_coord_data (MuSGD, xent, output 'l1' and 'l2', parameter 'l2') on the same models,
    seeds and batch: act/l1 = 'l1', act/rms = 'l2' of every module's output and W/rms = multiplier x
    the parameter's 'l2', at mup's t = paramlab's t + 1, to 1e-12. Controls: the same records one step
    off differ, and the readout's W/rms differs from mup's raw 'l2' by exactly its multiplier."""
    mup = pytest.importorskip("mup")
    from mup.coord_check import get_coord_data

    def make(width):
        model = MupNet(width)
        return mup.set_base_shapes(model, MupNet(64, device="meta"), delta=MupNet(128, device="meta"))

    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(16, D, generator=g, dtype=F64), torch.randint(0, 4, (16,), generator=g)
    widths, seeds, steps = [64, 256], 2, 3
    res = coord_check(make, widths, x, labels, optimizer=lambda m: mup.MuSGD(m.parameters(), lr=0.1), steps=steps,
                      seeds=seeds, loss=torch.nn.functional.cross_entropy)
    assert {r["quantity"] for r in res.records} == {"act/rms", "act/l1", "dact/rms", "dact/l1", "W/rms", "dW/rms",
                                                     "upd/rms"}  # spectral norms are opt-in
    def lazy(w):  # mup seeds once per seed, not per width: start every width from the seed, as coord_check does
        def build():
            torch.manual_seed(torch.initial_seed())
            return make(w)
        return build

    df = get_coord_data({w: lazy(w) for w in widths}, [(x, labels)], optimizer="sgd", lr=0.1, mup=True,
                        nsteps=steps, nseeds=seeds, lossfn="xent", cuda=False, show_progress=False,
                        output_fdict={"l1": "l1", "l2": "l2"}, param_fdict={"l2": "l2"})
    df = df[df["module"] != ""].copy()  # the root's output is the readout's
    df = df[~df["module"].str.startswith(":")]  # ... and its parameters, each module's
    df["seed"] = df.groupby(["width", "module", "t"]).cumcount()  # mup runs seed by seed
    ours = {(r["width"], r["seed"], r["name"], r["quantity"], r["step"]): r["value"] for r in res.records}
    mult = {w: {n: i.mult for n, i in mup_tensor_infos(make(w)).items()} for w in widths}
    pairs = []  # (ours at t - 1, ours at t, mup's value)
    for row in df.itertuples(index=False):
        if ":param[" in row.module:  # '<module>:param[weight]'
            mod, pname = row.module.split(":param[")
            name = f"{mod}.{pname[:-1]}"
            stats = [("W/rms", row.l2 * mult[row.width][name])]
        else:
            name, stats = row.module, [("act/l1", row.l1), ("act/rms", row.l2)]
        for q, v in stats:
            key = (row.width, row.seed, name, q)
            pairs.append((ours[key + (row.t - 1,)], ours.get(key + (row.t,)), v))
    assert len(pairs) > 100
    assert max(abs(a - v) / abs(v) for a, _, v in pairs) < 1e-12
    off = [abs(b - v) / abs(v) for _, b, v in pairs if b is not None]  # one step off: the values move
    assert np.median(off) > 1e-4
    key = (256, 0, "readout.weight", "W/rms", 0)
    raw = df[(df["module"] == "readout:param[weight]") & (df["width"] == 256) & (df["t"] == 1)]["l2"].iloc[0]
    assert mult[256]["readout.weight"] == pytest.approx(0.25) and ours[key] == pytest.approx(0.25 * raw, rel=1e-12)
    assert abs(ours[key] - raw) / raw > 0.5


def test_spectral_norms_are_opt_in_and_named_in_the_error():
    x, y = batch(8)
    res = coord_check(factory("mup"), [64, 128], x, y, steps=1, seeds=1)
    assert not any(r["quantity"].endswith("/spec") for r in res.records)
    with pytest.raises(KeyError, match="quantities='all'"):
        res.fit("layers.1.weight", "dW/spec", 1)
    full = coord_check(factory("mup"), [64, 128], x, y, steps=1, seeds=1, quantities="all")
    assert {r["quantity"] for r in full.records} >= {"W/spec", "dW/spec", "upd/spec"}
    # the rows both record are the same numbers; a spectral norm never exceeds sqrt(numel) x RMS (Frobenius)
    a = {(r["name"], r["quantity"], r["step"]): r["value"] for r in res.records}
    b = {(r["name"], r["quantity"], r["step"]): r["value"] for r in full.records}
    assert all(b[k] == v for k, v in a.items())
    assert b[("layers.1.weight", "dW/spec", 1)] <= 128 * b[("layers.1.weight", "dW/rms", 1)] * (1 + 1e-6)
    # at t = 1 the last update is the change since init
    assert b[("layers.1.weight", "upd/spec", 1)] == b[("layers.1.weight", "dW/spec", 1)]


# -- one step, batch 1: THEORY.md §3.3 -------------------------------------------------------------------

# (optimizer, scheme) -> {quantity: slope} from THEORY.md §3.3 (SGD and Adam tables).
# R1 / R2: relative change of the input / hidden preactivation after one step; df: |f_1 - f_0|.
THEORY = {
    ("sgd", "mup"): {"R1": 0.0, "R2": 0.0, "df": 0.0},
    ("sgd", "ntk"): {"R1": -0.5, "R2": -0.5, "df": 0.0},
    ("sgd", "sp-stable"): {"R1": -1.5, "R2": -0.5, "df": 0.0},
    ("sgd", "sp"): {"R1": -0.5, "R2": 0.5, "df": 1.0},  # df: Theta(n) in the linear regime (TP4 §4)
    ("adam", "mup"): {"R1": 0.0, "R2": 0.0, "df": 0.0},
    ("adam", "ntk"): {"R1": -0.5, "R2": -0.5, "df": 0.0},
}
ROWS = {"R1": ("layers.0", "dact/rms"), "R2": ("layers.1", "dact/rms"), "df": ("readout", "dact/rms")}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,scheme", list(THEORY))
def test_one_step_batch_one_slopes_match_theory(optimizer, scheme):
    """float64 tanh MLP (2 hidden layers, d = 16), MSE, batch 1, one step, widths 256..2048, 8 seeds.

    Target y = 10 with lr 1e-3 (the same step lr * chi as y = 1, lr = 1e-2): the exponents are those
    of the linear response, and a large target keeps chi = f_0 - y from fluctuating with f_0 from
    seed to seed, the dominant noise of this measurement (with y = 1 the 8-seed slopes scatter by
    +-0.15).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, D, generator=g, dtype=F64)
    y = torch.full((1, 1), 10.0, dtype=F64)
    res = coord_check(factory(scheme, dtype=F64), [256, 512, 1024, 2048], x, y, optimizer=optimizer, lr=1e-3,
                      steps=1, seeds=8, quantities=("dact/rms",))
    for q, expect in THEORY[(optimizer, scheme)].items():
        name, quantity = ROWS[q]
        fit = res.fit(name, quantity, 1)
        assert abs(fit["slope"] - expect) <= 0.15, (q, fit["slope"], expect)
        if fit["predicted"] is not None:  # the automatic prediction is THEORY's value
            assert fit["predicted"] == pytest.approx(expect), q
        else:
            assert (scheme, q) == ("sp", "df")  # logits of an unstable scheme are not predicted


@pytest.mark.slow
def test_logits_at_init_vanish_like_n_to_minus_half_in_mup_only():
    """f_0 ~ n^(-1/2) under muP, Theta(1) under NTK (THEORY.md §3.3): RMS over 128 inputs, 16 seeds."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, D, generator=g, dtype=F64)
    y = torch.zeros(128, 1, dtype=F64)
    for scheme, expect in (("mup", -0.5), ("ntk", 0.0)):
        res = coord_check(factory(scheme, dtype=F64), [128, 256, 512, 1024, 2048], x, y, steps=0, seeds=16,
                          quantities=("act/rms",))
        fit = res.fit("readout", "act/rms", 0)
        assert fit["predicted"] == expect
        assert abs(fit["slope"] - expect) <= 0.15, (scheme, fit["slope"])


def test_predicted_slopes_from_the_plan():
    """The prediction rules reproduce THEORY.md §3.3 / §5.4 without running anything."""
    order = [("layers.0", "layers.0"), ("act[0]", "act"), ("layers.1", "layers.1"), ("act[1]", "act"),
             ("readout", "readout")]

    def pred(scheme, family="sgd", steps=2):
        return predict_slopes(order, plan_tensor_infos(factory(scheme)(128)), family, steps)

    p = pred("sp-stable")
    assert p[("layers.0", "dact/rms", 1)] == (-1.5, -1.5) and p[("layers.1", "dact/rms", 2)] == (-0.5, -0.5)
    assert p[("readout", "act/rms", 0)] == (0.0, 0.0) and p[("readout", "dact/rms", 1)] == (0.0, 0.0)
    p = pred("mup", "adam")
    assert p[("layers.1", "dact/rms", 2)] == (0.0, 0.0) and p[("layers.1.weight", "dW/spec", 2)] == (0.0, 0.0)
    assert p[("readout", "act/rms", 1)] == (-0.5, 0.0)  # f_t = f_0 (n^-1/2) + df (Theta(1))
    p = pred("ntk", "adam")
    assert p[("layers.0", "dact/rms", 1)] == (-0.5, -0.5) and p[("layers.1", "dact/rms", 1)] == (-0.5, -0.5)
    p = pred("sp", "adam")
    assert p[("layers.1", "dact/rms", 1)] == (1.0, 1.0)  # THEORY.md §3.3 Adam: SP hidden ~ n^{+1}
    assert ("readout", "dact/rms", 1) not in p and ("layers.1", "dact/rms", 2) not in p
    assert ("act[1]", "dact/rms", 1) not in p  # a blow-up through tanh: no prediction


def test_a_subset_of_modules_gets_the_same_predictions():
    x, y = batch(8)
    kw = dict(steps=1, seeds=1, quantities=("dact",))
    full = coord_check(factory("sp-stable"), [64, 128], x, y, **kw)
    sub = coord_check(factory("sp-stable"), [64, 128], x, y, modules=["layers.1", "act"], **kw)
    assert sub.order == ["act[0]", "layers.1", "act[1]"]
    for name in sub.order:
        assert sub.fit(name, "dact/rms", 1)["predicted"] == full.fit(name, "dact/rms", 1)["predicted"]
    assert sub.fit("act[0]", "dact/rms", 1)["predicted"] == -1.5  # the input layer's change, unrecorded


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_coord_check_of_tied_hf_models_reports_attention_logits_and_the_tied_readout(arch):
    """Tied GPT-2 / Llama (widths 64-256, Adam lr 1e-2, 3 steps): the check records each attention module's
    q.k logits ('<module>.logits') and predicts the tied readout's logits at init between the CLT part
    (width^-1/2) and the part each input token's own embedding brings (Theta(1) under muP).
    muP: every logit row passes and no activation grows with width; SP (control): the attention logits
    and the readout grow. Measured rows that miss muP's prediction all shrink faster than predicted
    (finite width: e.g. the readout's first change, slope -0.3 against 0); README, Findings."""
    import torch.nn.functional as F

    from foreign import HF, V, tokens

    make, idx = HF[arch], tokens(batch=8, length=16)
    lm_loss = lambda out, y: F.cross_entropy(out.logits.reshape(-1, V), y.reshape(-1))  # noqa: E731
    res = {}
    for scheme in ("mup", "sp"):
        factory = lambda w, s=scheme: pl.parameterize(make(w), s, base=make(64, device="meta"),  # noqa: E731
                                                      delta=make(128, device="meta"), embedding_std=0.02)
        res[scheme] = coord_check(factory, [64, 128, 256], idx[:, :-1], idx[:, 1:], optimizer="adam", lr=1e-2,
                                  steps=3, seeds=2, loss=lm_loss)
    mup, sp = res["mup"], res["sp"]
    logits = sorted({f["name"] for f in mup.fits if f["name"].endswith(".logits")})
    assert len(logits) == 2
    assert all(f["passed"] for f in mup.fits if f["name"] in logits)
    assert -0.6 < mup.fit(logits[0], "act/rms", 0)["slope"] < -0.4  # 1/d_head attention on independent q, k
    grows = [f for f in mup.fits if f["quantity"].split("/")[0] in ("act", "dact") and f["stable"] is False]
    assert not grows, grows
    head = mup.fit("lm_head", "act/rms", 0)
    assert (head["predicted_lo"], head["predicted"]) == (-0.5, 0.0) and head["passed"]
    assert any(not f["passed"] for f in sp.fits if f["name"] in logits and f["step"] >= 2)
    assert not sp.fit("lm_head", "act/rms", 0)["passed"]  # tied SP: logits ~ width^+1/2 at init


def test_coord_check_measures_a_wrapped_model_inside_its_wrapper():
    x, y = batch(8)
    kw = dict(steps=1, seeds=1, quantities=("act", "dact"))
    plain = coord_check(factory("mup"), [64, 128], x, y, **kw)
    wrapped = coord_check(lambda w: torch.compile(factory("mup")(w), backend="eager"), [64, 128], x, y, **kw)
    assert [(f["name"], f["quantity"], f["step"], f["predicted"]) for f in wrapped.fits] == \
           [(f["name"], f["quantity"], f["step"], f["predicted"]) for f in plain.fits]
    assert [f["slope"] for f in wrapped.fits] == pytest.approx([f["slope"] for f in plain.fits], abs=1e-9)


def test_statistics_are_taken_before_later_in_place_ops():
    """act/l1 of a Linear followed by an in-place ReLU is the pre-ReLU value, whether or not the
    outputs are kept for dact (the statistics are reduced in the hook, as the output is produced)."""

    def make(w):
        return nn.Sequential(nn.Linear(4, w), nn.ReLU(inplace=True), nn.Linear(w, 2)).double()

    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)  # noqa: E731
    want = {}
    for w in (8, 16):
        torch.manual_seed(0)
        m = make(w)
        with torch.no_grad():
            want[w] = float(m[0](x).abs().mean())  # pre-ReLU: has negative entries
            assert want[w] != pytest.approx(float(torch.relu(m[0](x)).abs().mean()))  # the control differs
    for qs in (("act/l1",), ("act", "dact")):
        res = coord_check(make, [8, 16], x, y, optimizer=opt, steps=1, seeds=1, quantities=qs, auto_predict=False)
        got = {r["width"]: r["value"] for r in res.records if r["name"] == "0" and r["quantity"] == "act/l1" and r["step"] == 0}
        assert got == pytest.approx(want, rel=1e-12)
