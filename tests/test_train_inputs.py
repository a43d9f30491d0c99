"""Bad inputs to train / train_ensemble are errors before any step, never a "diverged" or a silently
different run; divergence is non-finite or above DIVERGE_FACTOR x the initial loss, with its reason."""

import dataclasses

import pytest
import torch

import paramlab as pl
from paramlab.data import multi_index
from paramlab.divergence import DIVERGE_FACTOR, diverged_reason
from paramlab.stacked import train_ensemble
from paramlab.train import train


@pytest.fixture(scope="module")
def task():
    return multi_index(128, 64, d=8, k=2, seed=0)


def model(d_out=1, scheme="mup", width=32, seed=0):
    return pl.mlp(8, d_out, width, depth=2, scheme=scheme, base_width=32, seed=seed)


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(batch_size=-3), "batch_size must be >= 1"),  # else a slice perm[0:-3] would train silently
    (dict(batch_size=2.5), "batch_size must be an int"),
    (dict(steps=-1), "steps must be >= 0"),
    (dict(steps="abc"), "steps must be an int"),
    (dict(eval_every=0), "eval_every must be >= 1"),
    (dict(checkpoint_every=5), "checkpoint_every needs checkpoint"),
    (dict(diverge_factor=0.5), "diverge_factor must be a number > 1"),
])
def test_bad_sizes_are_errors_before_any_step(task, kw, match):
    m = model()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=match):
        train(m, task, steps=kw.pop("steps", 3), **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


@pytest.mark.parametrize("d_out", [2, 5])
def test_output_that_would_broadcast_is_an_error(task, d_out):
    with pytest.raises(ValueError, match=r"output has shape \(2, %d\).*d_out=1" % d_out):
        train(model(d_out), task, steps=3)
    with pytest.raises(ValueError, match="d_out=1"):
        train_ensemble([model(d_out), model(d_out, seed=1)], task, steps=3)
    train(model(1), task, steps=1)  # the right shape trains


def test_non_finite_data_is_an_error_not_a_divergence(task):
    x = task.x_train.clone()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="x_train has 1 NaN/inf"):
        dataclasses.replace(task, x_train=x)  # a Task refuses it at construction
    bad = dataclasses.replace(task)
    y = bad.y_test.clone()
    y[0, 0] = float("inf")
    object.__setattr__(bad, "y_test", y)  # past the Task's own check: train still refuses it
    with pytest.raises(ValueError, match="y_test has 1 NaN/inf"):
        train(model(), bad, steps=3)
    with pytest.raises(ValueError, match="y_test has 1 NaN/inf"):
        train_ensemble([model(), model(seed=1)], bad, steps=3)


def test_divergence_rule_and_reason():
    assert diverged_reason(0.5, 1.0) is None
    assert diverged_reason(DIVERGE_FACTOR * 0.9, 1.0) is None
    assert diverged_reason(1.7e6, 0.9) == "loss 1.7e+06 > 1e+03 x initial 0.9"
    assert diverged_reason(float("nan"), 0.9) == "loss nan"
    assert diverged_reason(1.7e6, 0.9, None) is None  # factor off: only non-finite counts


def test_finite_blow_up_is_diverged_with_its_reason(task):
    # Adam at lr 10 on SP ends at a huge but finite loss: it must not be recorded as "finished"
    res = train(model(scheme="sp", width=256), task, optimizer="adam", lr=10.0, steps=30, batch_size=32)
    assert res.diverged and res.final["diverged"] == 1
    assert res.diverged_reason.startswith("loss ") and "x initial" in res.diverged_reason
    off = train(model(scheme="sp", width=256), task, optimizer="adam", lr=10.0, steps=30, batch_size=32,
                diverge_factor=None)
    # the same run with the rule off goes on (finite): the rule, not an overflow, stopped the first one
    assert off.steps_done > res.steps_done


def test_stacked_and_single_agree_on_threshold_divergence(task):
    kw = dict(optimizer="adam", lr=[1e-3, 10.0], seed=[0, 1], steps=30, batch_size=32)
    mk = lambda: [model(scheme="sp", width=64, seed=0).double(), model(scheme="sp", width=64, seed=1).double()]  # noqa: E731
    ra = train_ensemble(mk(), task, **kw)
    b = mk()
    rb = [train(m, task, optimizer="adam", lr=lr, seed=s, steps=30, batch_size=32)
          for m, lr, s in zip(b, kw["lr"], kw["seed"])]
    assert [r.diverged for r in ra] == [r.diverged for r in rb] == [False, True]
    assert ra[1].diverged_reason == rb[1].diverged_reason and ra[1].steps_done == rb[1].steps_done


def test_data_dtype_other_than_the_parameters_is_an_error_naming_the_fix(task):
    with pytest.raises(ValueError, match=r"dtype=torch.float16 casts the data .* parameters are torch.float32.*autocast"):
        train(model(), task, lr=0.1, steps=2, dtype=torch.float16)
    res = train(model(), task, lr=0.1, steps=2, dtype=torch.float32)  # negative control: the same dtype trains
    assert res.steps_done == 2
