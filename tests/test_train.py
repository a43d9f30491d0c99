import math

import pytest
import torch

import paramlab as pl
from paramlab.data import multi_index, sparse_parity
from paramlab.train import load_checkpoint, train


@pytest.fixture(scope="module")
def task():
    return multi_index(256, 128, d=16, k=2, seed=0)


def model(scheme="mup", width=64, seed=0):
    return pl.mlp(16, 1, width, depth=2, scheme=scheme, base_width=32, seed=seed)


def test_loss_goes_down_and_hooks_and_log_run(task):
    logged = []
    res = train(model(), task, optimizer="adam", lr=3e-3, steps=60, batch_size=64, eval_every=20,
                hooks=[lambda step, m: {"probe/out": float(m(task.x_test[:4]).abs().mean())}],
                log=lambda metrics, step: logged.append((step, metrics)))
    assert [r["step"] for r in res.history] == [0, 20, 40, 60]
    assert res.final["train/loss"] < 0.7 * res.history[0]["train/loss"]
    assert "probe/out" in res.final and "test/loss" in res.final
    assert [s for s, _ in logged] == [0, 20, 40, 60] and not res.diverged


def test_deterministic_under_seed(task):
    a = train(model(), task, lr=0.05, steps=20, batch_size=32, seed=3).final
    b = train(model(), task, lr=0.05, steps=20, batch_size=32, seed=3).final
    c = train(model(), task, lr=0.05, steps=20, batch_size=32, seed=4).final
    assert a == b and a != c


def test_divergence_is_recorded_not_raised(task):
    res = train(model("sp", width=512), task, lr=50.0, steps=30)
    assert res.diverged and res.final["diverged"] == 1 and math.isnan(res.final["train/loss"])
    assert res.steps_done < 30


def test_classification_accuracy_and_checkpoint_roundtrip(tmp_path):
    t = sparse_parity(512, 256, d=8, k=2, seed=0)
    m = pl.mlp(8, 2, 64, depth=2, scheme="mup", base_width=32, seed=0)
    res = train(m, t, optimizer="adam", lr=1e-2, steps=150, batch_size=64, checkpoint=tmp_path / "c.pt")
    assert res.final["train/acc"] > 0.9
    fresh = pl.mlp(8, 2, 64, depth=2, scheme="mup", base_width=32, seed=1)
    opt = pl.optimizer(fresh, "adam", lr=1e-2)
    assert load_checkpoint(tmp_path / "c.pt", fresh, opt) == 150
    x = t.x_test[:16]
    assert torch.equal(fresh(x), m(x))
    assert len(opt.state) > 0


def test_bad_arguments(task):
    with pytest.raises(ValueError, match="unknown loss"):
        train(model(), task, loss="hinge", steps=1)
    with pytest.raises(ValueError, match="steps"):
        train(model(), task, steps=-1)
    with pytest.raises(ValueError, match="lr must be positive"):
        train(model(), task, lr=0.0, steps=1)


def test_eval_rows_evaluates_a_fixed_subset_and_leaves_training_alone(task):
    """eval_rows: the reported losses are those of a fixed subset (the same for every seed); the weights
    trained are exactly those of the full-evaluation run; eval_rows >= n is the full evaluation."""
    from paramlab.train import evaluate, eval_subset

    runs = {}
    for rows in (None, 10_000, 50):
        m = model().double()
        runs[rows] = (m, train(m, task, lr=0.05, steps=6, batch_size=32, seed=3, eval_every=3, eval_rows=rows,
                               dtype=torch.float64))
    full, same, sub = runs[None], runs[10_000], runs[50]
    assert [r["train/loss"] for r in same[1].history] == [r["train/loss"] for r in full[1].history]
    for a, b in zip(full[0].parameters(), sub[0].parameters()):
        assert torch.equal(a, b)  # evaluation does not touch training
    xs, ys = eval_subset(task.x_train.double(), task.y_train.double(), 50)
    assert len(xs) == 50 and torch.equal(xs, eval_subset(task.x_train.double(), task.y_train.double(), 50)[0])
    with torch.no_grad():
        want = evaluate(sub[0], xs, ys, "mse")["loss"]
    assert sub[1].final["train/loss"] == pytest.approx(want, rel=1e-12)
    assert sub[1].final["train/loss"] != pytest.approx(full[1].final["train/loss"], rel=1e-6)  # it is a subset
    with pytest.raises(ValueError):
        train(model(), task, steps=2, eval_rows=0)
