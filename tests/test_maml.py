"""First-order MAML across widths: the meta-gradient against a hand-written one,
the scheme's inner learning rates, the episodes (no leakage, determinism), bad input, and the tiny
experiment through the runner."""

import copy

import numpy as np
import pytest
import torch

import paramlab as pl
from paramlab.experiments import get
from paramlab.experiments import maml as M
from paramlab.engine.maml import adapt, fomaml_grads, inner_lrs, meta_params
from paramlab.optim import effective_lrs
from paramlab.runners import SpecError


def _pool(n=60, d=40, n_cls=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = np.arange(n) % n_cls
    return x, y


def _episodes(y, k=2, q=3, n=2, seed=0):
    reserved = np.arange(len(y) - 10, len(y))  # the last 10 items: never drawn (defines the classes)
    return M.train_episodes(y, reserved, k=k, n_query=q, n_way=5, n=n, seed=seed)


def _hand_outer_step(model, x, y, eps, inner_lr, inner_steps, lr):
    """One FO-MAML outer step written out: per episode, a copy of the model takes `inner_steps` explicit SGD
    steps p -= lr_p * grad with lr_p from pl.optimizer's effective lrs; the query loss's gradient at the adapted
    copy, averaged over episodes, is applied to the model by pl.optimizer's SGD."""
    step_lr = effective_lrs(pl.optimizer(model, "sgd", inner_lr))
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for ep in eps:
        net = copy.deepcopy(model)
        xs, ys = x[ep.support], torch.from_numpy(ep.labels(y, ep.support))
        xq, yq = x[ep.query], torch.from_numpy(ep.labels(y, ep.query))
        for _ in range(inner_steps):
            net.zero_grad()
            torch.nn.functional.cross_entropy(net(xs), ys).backward()
            with torch.no_grad():
                for n, p in net.named_parameters():
                    p -= step_lr[n] * p.grad
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(xq), yq).backward()
        for n, p in net.named_parameters():
            grads[n] += p.grad / len(eps)
    opt = pl.optimizer(model, "sgd", lr)
    for n, p in model.named_parameters():
        p.grad = grads[n]
    opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_outer_step_equals_hand_written_fomaml_with_negative_control():
    x, y = _pool()
    eps = _episodes(y, n=3)
    net = pl.mlp(40, 5, 32, scheme="mup", base_width=8, seed=1, dtype=torch.float64)  # 4x base: lrs differ per tensor
    cfg = dict(inner_lr=0.3, inner_steps=3, optimizer="sgd", lr=0.2, meta_batch=3)
    ours = copy.deepcopy(net)
    M.meta_train(ours, x, y, eps, cfg)
    got = {n: p.detach() for n, p in ours.named_parameters()}
    want = _hand_outer_step(copy.deepcopy(net), x, y, eps, 0.3, 3, 0.2)
    err = max(float((got[n] - want[n]).abs().max()) for n in want)
    moved = max(float((got[n] - p.detach()).abs().max()) for n, p in net.named_parameters())
    assert err < 1e-12 and moved > 1e-3
    # negative control: a 0.1% change of the inner lr must fail the same check
    off = _hand_outer_step(copy.deepcopy(net), x, y, eps, 0.3 * 1.001, 3, 0.2)
    assert max(float((got[n] - off[n]).abs().max()) for n in off) > 1e-9


def test_inner_loop_leaves_the_meta_parameters_untouched():
    x, y = _pool(dtype=torch.float32)
    net = pl.mlp(40, 5, 32, scheme="ntk", base_width=16, seed=0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    ep = _episodes(y, n=1)[0]
    lrs = inner_lrs(net, 0.5)
    theta = adapt(net, meta_params(net), lrs, x[ep.support], torch.from_numpy(ep.labels(y, ep.support)), 3)
    fomaml_grads(net, [M._batch(x, y, e, torch.float32) for e in _episodes(y, n=2)], lrs, 2)
    M.meta_test(net, x, y, _episodes(y, n=2), {"inner_lr": 0.5, "inner_steps": 2})
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), before[n]) and p.grad is None
        assert not torch.equal(theta[n], before[n])  # while the adapted copy did move


@pytest.mark.parametrize("scheme, ratio", [("mup", 1 / 4), ("ntk", 1.0)])
def test_inner_lrs_are_the_schemes(scheme, ratio):
    net = pl.mlp(40, 5, 64, scheme=scheme, base_width=16, seed=0)  # m = 4
    lrs = inner_lrs(net, 0.7)
    assert lrs == effective_lrs(pl.optimizer(net, "sgd", 0.7))
    assert lrs["layers.1.weight"] / lrs["readout.weight"] == pytest.approx(ratio, rel=1e-12)


def _tiny_cfg(**kw):
    p = dict(M.SIZES["tiny"])
    for k in ("schemes", "widths", "seeds"):
        p.pop(k)
    return {**p, "width": p["base_width"], "seed": 0, **kw}


def test_schemes_coincide_at_the_base_width():
    outs = {s: M.run_one(_tiny_cfg(scheme=s), None) for s in ("sp-stable", "ntk", "mf", "mup")}
    ref = outs["mup"]
    for s, o in outs.items():
        for k in (1, 5):
            assert o[f"k{k}/acc_episodes"] == ref[f"k{k}/acc_episodes"], s
            assert o[f"k{k}/val_loss"] == ref[f"k{k}/val_loss"], s
    # and a different width is a different network (the check above can fail)
    wide = M.run_one(_tiny_cfg(scheme="ntk", width=64), None)
    assert wide["k5/val_loss"] != ref["k5/val_loss"]


def test_episodes_no_leakage_and_deterministic():
    cfg = _tiny_cfg(scheme="mup")
    (xa, ya), (xb, yb), tr, val, te = M._pools(cfg, 5)
    A, B = M._data(5, cfg["n_episodes"], cfg["data_seed"])
    # meta-training sees mnist1d classes 0-4 only, meta-test 5-9 only (labels are positions in these lists)
    assert A.meta["classes"] == [0, 1, 2, 3, 4] and B.meta["classes"] == [5, 6, 7, 8, 9]
    assert torch.equal(xa, torch.cat([A.x_train, A.x_test])) and torch.equal(xb, B.x)
    # no meta-test signal is a meta-training signal
    a = {tuple(r) for r in xa.numpy().round(5).tolist()}
    assert not any(tuple(r) in a for r in xb.numpy().round(5).tolist())
    # meta-train draws from A's training signals, meta-val from its held-out ones; shots and queries disjoint
    n_tr = len(A.x_train)
    assert all(np.r_[e.support, e.query].max() < n_tr for e in tr)
    assert all(np.r_[e.support, e.query].min() >= n_tr for e in val)
    for e in tr + val + te:
        assert not set(e.support) & set(e.query)
        assert (np.bincount(e.labels(ya if e in tr + val else yb, e.support)) == 5).all()  # 5 shots per label
    assert all(len(e.query) == 5 * cfg["n_query"] for e in tr + val)
    # labels are a permutation per episode, not always the identity
    assert len({tuple(e.classes) for e in tr}) > 1
    again = M._pools(cfg, 5)
    for e1, e2 in zip(tr + val + te, again[2] + again[3] + again[4]):
        assert np.array_equal(e1.support, e2.support) and np.array_equal(e1.query, e2.query)
        assert np.array_equal(e1.classes, e2.classes)
    other = M._pools({**cfg, "data_seed": 1}, 5)
    assert not all(np.array_equal(e1.support, e2.support) for e1, e2 in zip(tr, other[2]))


def test_fewer_ways_use_a_class_subset():
    y = np.arange(60) % 5
    eps = M.train_episodes(y, np.arange(50, 60), k=1, n_query=2, n_way=3, n=4, seed=0)
    for e in eps:
        assert len(e.classes) == 3 and set(y[e.support]) == set(e.classes) and len(e.query) == 6


def test_bad_input_is_refused_with_the_fix():
    exp = get("maml")
    y = np.arange(60) % 5
    with pytest.raises(ValueError, match="pass n_way <= 5"):
        M.train_episodes(y, np.arange(50, 60), k=1, n_query=2, n_way=6, n=2, seed=0)
    with pytest.raises(ValueError, match="must be >= 1"):
        M.train_episodes(y, np.arange(50, 60), k=0, n_query=2, n_way=5, n=2, seed=0)
    ep = M.train_episodes(y, np.arange(50, 60), k=1, n_query=2, n_way=3, n=1, seed=0)[0]
    outside = np.flatnonzero(~np.isin(y, ep.classes))[:2]
    with pytest.raises(ValueError, match="not in this episode's classes"):
        ep.labels(y, outside)
    for bad, msg in (({"shots": [0, 5]}, "positive ints"), ({"n_way": 6}, "n_way <= 5"),
                     ({"schemes": ["nope"]}, "is not a scheme"), ({"inner_steps": 0}, "must be >= 1")):
        with pytest.raises(SpecError, match=msg):
            exp.run("tiny", root="/nonexistent-never-written", use_wandb=False, progress=False, **bad)


def test_tiny_runs_end_to_end(tmp_path, monkeypatch):
    s = get("maml").run("tiny", root=tmp_path, use_wandb=False, progress=False, group="t")
    out = tmp_path / "maml" / "t" / "summary"
    assert (out / "summary.json").exists() and (out / "maml_mnist1d.png").exists() and (out / "summary.md").exists()
    p = s["params"]
    assert s["verdicts"].keys() == {"k1", "k5"}
    for v, vv in s["verdicts"].items():
        assert vv["schemes"]["mup"]["regime"] == "feature learning" and vv["schemes"]["ntk"]["regime"] == "kernel"
        assert set(vv["prediction"]) == {"feature_learning_gain_positive", "feature_learning_not_shrinking",
                                         "kernel_gain_falls", "beats_kernels"}
        assert len(s["kernel_baselines"][v]["nngp"]) == p["n_episodes"]
        assert 0 <= s["kernel_baselines"][v]["nngp"][0] <= 1
        assert len(s["kernel_baselines"][f"val/{v}"]["ntk"]) == p["n_val_episodes"]
        assert set(vv["meta_val_gap_at_largest"]) == {"mup - ntk"}
        g = vv["schemes"]
        assert g["mup"]["acc"][0] == g["ntk"]["acc"][0]  # base width: one network
    # summarized again (every run complete): the kernel baselines are read from summary/parts/, not recomputed
    before, calls = (out / "summary.json").read_bytes(), []
    monkeypatch.setattr(M, "kernel_baselines", lambda p: calls.append(p) or {})
    get("maml").run("tiny", root=tmp_path, use_wandb=False, progress=False, group="t")
    assert calls == [] and (out / "summary.json").read_bytes() == before
