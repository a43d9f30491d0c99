import math

import pytest
import torch

import paramlab as pl
from paramlab.data import multi_index, sparse_parity
from paramlab.stacked import MLPEnsemble, step_flops, train_ensemble, train_many, train_sequential, use_ensemble
from paramlab.train import train

# Stacked == one by one is an equivalence of arithmetic, so it is checked in float64 with a tight
# tolerance; float32 rounding differs with the CPU, the thread count and the stacking, and one
# rounding step of a small bias's update is already ~1e-5 relative. `test_negative_control` shows the
# bar is tight enough to catch a 0.1% change of one model's lr.
RTOL = 1e-10
F64 = torch.float64


@pytest.fixture(scope="module")
def task():
    return multi_index(256, 128, d=16, k=2, seed=0)


def make(schemes, seeds, width=64, d_in=16, d_out=1, base_width=32, depth=2, dtype=F64):
    return [pl.mlp(d_in, d_out, width, depth=depth, scheme=s, base_width=base_width, seed=sd, dtype=dtype)
            for s, sd in zip(schemes, seeds)]


def assert_same(ens_res, seq_res, ens_models, seq_models, rtol=RTOL):
    for a, b in zip(ens_res, seq_res):
        assert a.diverged == b.diverged and a.steps_done == b.steps_done
        assert [r["step"] for r in a.history] == [r["step"] for r in b.history]
        for ra, rb in zip(a.history, b.history):
            assert ra.keys() == rb.keys()
            for k in rb:
                if isinstance(rb[k], float) and math.isnan(rb[k]):
                    assert math.isnan(ra[k])
                else:
                    assert ra[k] == pytest.approx(rb[k], rel=rtol, abs=1e-12), (k, ra["step"])
    for ma, mb, r in zip(ens_models, seq_models, seq_res):
        for (n, pa), pb in zip(ma.named_parameters(), mb.parameters()):
            if r.diverged:  # weights of a diverged model: equal where finite, non-finite in the same places
                torch.testing.assert_close(pa.detach(), pb.detach(), rtol=rtol, atol=0.0, equal_nan=True)
                continue
            err = float((pa.detach() - pb.detach()).norm() / pb.detach().norm().clamp_min(1e-12))
            assert err < rtol, (n, err)


SCHEMES = ["mup", "sp", "ntk", "mf"]
SEEDS = [0, 1, 2, 3]


def test_sgd_momentum_equals_sequential(task):
    lrs = [0.05, 0.02, 0.01, 0.03]  # different lrs, seeds (init and batch order) and schemes
    kw = dict(optimizer="sgd", lr=lrs, seed=SEEDS, steps=40, batch_size=32, eval_every=10, momentum=0.9)
    a, b = make(SCHEMES, SEEDS), make(SCHEMES, SEEDS)
    assert_same(train_ensemble(a, task, **kw), train_sequential(b, task, **kw), a, b)


@pytest.mark.parametrize("opt", ["sgd", "adam", "lion"])
def test_negative_control_a_tenth_of_a_percent_lr_change_fails(task, opt):
    """The float64 bar is meaningful: one model's lr off by 0.1% is caught."""
    lrs = [0.05, 0.02] if opt == "sgd" else [3e-3, 1e-3] if opt == "adam" else [3e-4, 1e-4]
    kw = dict(optimizer=opt, seed=[0, 1], steps=10, batch_size=32, eval_every=5)
    a, b = make(["mup", "sp"], [0, 1]), make(["mup", "sp"], [0, 1])
    ra = train_ensemble(a, task, lr=lrs, **kw)
    rb = train_sequential(b, task, lr=[lrs[0], lrs[1] * 1.001], **kw)
    with pytest.raises(AssertionError):
        assert_same(ra, rb, a, b)


def test_float32_agrees_on_whole_model_norms(task):
    """In float32 only whole-model norms are compared, with a stated tolerance: rounding differs
    between the stacked and the one-by-one arithmetic (and between CPUs and thread counts)."""
    kw = dict(optimizer="adam", lr=[3e-3, 1e-3], seed=[0, 1], steps=20, batch_size=32)
    a = make(["mup", "sp"], [0, 1], dtype=torch.float32)
    b = make(["mup", "sp"], [0, 1], dtype=torch.float32)
    ra, rb = train_ensemble(a, task, **kw), train_sequential(b, task, **kw)
    for ma, mb, x, y in zip(a, b, ra, rb):
        va = torch.cat([p.detach().flatten() for p in ma.parameters()])
        vb = torch.cat([p.detach().flatten() for p in mb.parameters()])
        assert float((va - vb).norm() / vb.norm()) < 1e-4  # atol 1e-4 relative to the model's norm
        assert x.final["train/loss"] == pytest.approx(y.final["train/loss"], rel=1e-4)


def test_sgd_nesterov_weight_decay_full_batch(task):
    kw = dict(optimizer="sgd", lr=[0.05, 0.02], seed=[5, 6], steps=25, momentum=0.5, nesterov=True,
              weight_decay=[1e-3, 0.0])
    a, b = make(["mup", "ntk"], [5, 6]), make(["mup", "ntk"], [5, 6])
    assert_same(train_ensemble(a, task, **kw), train_sequential(b, task, **kw), a, b)


@pytest.mark.parametrize("opt", ["adam", "adamw"])
def test_adam_equals_sequential(task, opt):
    lrs = [3e-3, 1e-3, 2e-3, 5e-3]
    kw = dict(optimizer=opt, lr=lrs, seed=SEEDS, steps=40, batch_size=64, eval_every=20,
              weight_decay=0.01 if opt == "adamw" else 0.0, eps=[1e-8, 1e-6, 1e-8, 1e-7])
    a, b = make(SCHEMES, SEEDS), make(SCHEMES, SEEDS)
    assert_same(train_ensemble(a, task, **kw), train_sequential(b, task, **kw), a, b)


def test_lion_equals_sequential(task):
    """Lion stacked (the engine's row, `paramlab.lion.lion_update_` on the slices) == `paramlab.lion.Lion` one
    by one, with its own default betas (0.9, 0.99) on both sides, per-model lrs and weight decay, four schemes;
    one by one takes no eps (Lion has none) when none is given."""
    kw = dict(optimizer="lion", lr=[3e-4, 1e-4, 2e-4, 5e-4], seed=SEEDS, steps=30, batch_size=64, eval_every=10,
              weight_decay=[0.0, 0.1, 0.0, 0.3])
    a, b = make(SCHEMES, SEEDS), make(SCHEMES, SEEDS)
    ra = train_many(a, task, mode="ensemble", **kw)
    assert_same(ra, train_sequential(b, task, **kw), a, b)
    assert not all(r.diverged for r in ra) and ra[0].final["train/loss"] < ra[0].history[0]["train/loss"]


@pytest.mark.parametrize("opt", ["adam", "adamw"])
def test_unfused_adam_and_chunked_evaluation_equal_sequential(task, opt, monkeypatch):
    """The elementwise Adam (devices without torch's fused kernel) and evaluation in several chunks."""
    import paramlab.engine.update as so
    import paramlab.engine.supervised as st

    monkeypatch.setattr(so, "_FUSED_DEVICES", ())
    monkeypatch.setattr(st, "_EVAL_ELEMENTS", 3 * 64 * 50)  # 50 rows per chunk: 128 test rows in 3
    kw = dict(optimizer=opt, lr=[3e-3, 1e-3, 2e-3], seed=[0, 1, 2], steps=20, batch_size=64, eval_every=10,
              weight_decay=0.01 if opt == "adamw" else 0.0, eps=[1e-8, 1e-6, 1e-8])
    a, b = make(SCHEMES[:3], SEEDS[:3]), make(SCHEMES[:3], SEEDS[:3])
    ra = train_ensemble(a, task, **kw)
    assert_same(ra, train_sequential(b, task, **kw), a, b)


def test_classification_with_shared_batches_and_per_model_loop_paths():
    # width 512: hidden weights have 2^18 entries, so the optimizer and the matmuls take their
    # model-by-model paths; one seed: every model sees the same batches
    t = sparse_parity(256, 128, d=8, k=2, seed=0)
    kw = dict(optimizer="adam", lr=[1e-3, 3e-3], seed=7, steps=6, batch_size=64, eval_every=3)
    a = make(["mup", "sp"], [1, 2], width=512, d_in=8, d_out=2, base_width=64)
    b = make(["mup", "sp"], [1, 2], width=512, d_in=8, d_out=2, base_width=64)
    ra, rb = train_ensemble(a, t, **kw), train_sequential(b, t, **kw)
    assert "train/acc" in ra[0].final
    assert_same(ra, rb, a, b)


@pytest.mark.parametrize("eval_every", [None, 1])  # caught by a step's loss / by an evaluation
def test_divergence_drops_one_model_and_the_others_go_on(task, eval_every):
    kw = dict(optimizer="sgd", lr=[0.05, 50.0, 0.02], seed=[0, 1, 2], steps=30, batch_size=64, eval_every=eval_every)
    a = make(["mup", "sp", "ntk"], [0, 1, 2], width=256, base_width=32)
    b = make(["mup", "sp", "ntk"], [0, 1, 2], width=256, base_width=32)
    ra, rb = train_ensemble(a, task, **kw), train_sequential(b, task, **kw)
    assert [r.diverged for r in ra] == [False, True, False]
    assert ra[1].final["diverged"] == 1 and ra[1].steps_done < 30
    # non-finite, or above DIVERGE_FACTOR x the initial loss (paramlab.divergence); the reason says which
    assert ra[1].diverged_reason == rb[1].diverged_reason and ra[1].diverged_reason.startswith("loss ")
    assert not math.isfinite(ra[1].final["train/loss"]) or ra[1].final["train/loss"] > 1e3 * ra[1].history[0]["train/loss"]
    assert_same(ra, rb, a, b)


def test_hooks_and_logs_per_model(task):
    seen, logged = [], [[], []]
    hook = lambda step, m: seen.append((step, id(m))) or {"probe/out": float(m(task.x_test[:4].to(F64)).abs().mean())}  # noqa: E731
    a = make(["mup", "sp"], [0, 1])
    b = make(["mup", "sp"], [0, 1])
    kw = dict(optimizer="sgd", lr=[0.05, 0.02], seed=[0, 1], steps=20, batch_size=32, eval_every=10)
    ra = train_ensemble(a, task, hooks=[hook], log=[lambda m, s, i=i: logged[i].append(s) for i in range(2)], **kw)
    rb = train_sequential(b, task, hooks=[hook], **kw)
    assert logged == [[0, 10, 20], [0, 10, 20]]
    assert {i for _, i in seen} >= {id(a[0]), id(a[1])}
    assert_same(ra, rb, a, b)  # hook values computed on the written-back weights match


def test_forward_matches_models_and_autocast_runs(task):
    ms = make(SCHEMES, SEEDS)
    ens = MLPEnsemble(ms)
    x = task.x_test[:8].to(F64)
    with torch.no_grad():
        out = ens(x)
        for k, m in enumerate(ms):
            torch.testing.assert_close(out[k], m(x), rtol=1e-12, atol=1e-12)
    res = train_ensemble(make(["mup", "sp"], [0, 1], dtype=torch.float32), task, optimizer="adam", lr=1e-3, seed=[0, 1], steps=5,
                         autocast="bf16")
    ref = train(make(["mup"], [0], dtype=torch.float32)[0], task, optimizer="adam", lr=1e-3, seed=0, steps=5, autocast="bf16")
    assert all(math.isfinite(r.final["train/loss"]) for r in res)
    assert res[0].final["train/loss"] == pytest.approx(ref.final["train/loss"], rel=0.05)


def test_auto_policy_and_errors(task):
    assert use_ensemble(64, 2, 16, 1, 128, 8) and not use_ensemble(4096, 3, 16, 1, 128, 8)
    assert not use_ensemble(64, 2, 16, 1, 128, 1)
    assert use_ensemble(4096, 3, 16, 1, 128, 8, device="cuda")
    assert step_flops(64, 2, 16, 1, 10) == 6 * 10 * (16 * 64 + 64 * 64 + 64)
    res = train_many(make(["mup", "sp"], [0, 1]), task, lr=0.05, seed=[0, 1], steps=3)
    assert len(res) == 2 and all(r.steps_done == 3 for r in res)
    with pytest.raises(ValueError, match="one architecture"):
        MLPEnsemble(make(["mup"], [0], width=64) + make(["mup"], [0], width=32))
    with pytest.raises(TypeError, match="paramlab MLPs"):
        MLPEnsemble([torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="3 entries for 2 models"):
        train_ensemble(make(["mup", "sp"], [0, 1]), task, lr=[0.1, 0.1, 0.1], steps=1)
    with pytest.raises(ValueError, match="lr must be positive"):
        train_ensemble(make(["mup"], [0]), task, lr=0.0, steps=1)
    hooked = make(["mup"], [0])[0]
    hooked.layers[1].register_forward_hook(lambda mod, args, out: out)
    with pytest.raises(ValueError, match="cannot replay"):
        MLPEnsemble([hooked])
    with pytest.raises(ValueError, match="mode"):
        train_many(make(["mup"], [0]), task, mode="fast")
