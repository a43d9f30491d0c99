"""The training engine: one backward for every training path, every loop's records reach the live sinks,
one divergence rule (the LM included), one update path whose families are table rows, and one measured
stacking rule that keeps the decisions the benchmarks measured."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import paramlab as pl
from paramlab import live
from paramlab.data import multi_index
from paramlab.data.text import shakespeare_char
from paramlab.engine import maml, stack, stacking_pays
from paramlab.engine.lm import train_lm, train_lm_stacked
from paramlab.engine.mlp_stack import MLPStack
from paramlab.engine.stack import Stacked
from paramlab.engine.supervised import train_sequential, train_stack
from paramlab.engine.update import KERNELS, Kernel, StackedUpdate

ROOT = Path(pl.__file__).resolve().parent
F64 = torch.float64
LM = dict(steps=6, batch=4, context=16)


@pytest.fixture(scope="module")
def task():
    return multi_index(128, 64, d=16, k=2, seed=0)


@pytest.fixture(scope="module")
def text():
    return shakespeare_char()


def mlps(n, dtype=F64, scheme="mup"):
    return [pl.mlp(16, 1, 32, depth=2, scheme=scheme, base_width=16, seed=s, dtype=dtype) for s in range(n)]


def lms(text, seeds, width=32, scheme="mup"):
    return [pl.transformer(text.vocab_size, width, depth=2, n_heads=4, scheme=scheme, base_width=16, max_len=16,
                           seed=s, dtype=F64) for s in seeds]


def test_one_function_runs_every_training_backward():
    """Every `.backward(` call in the package is in engine/step.py's train_step (a source scan: a new loop with
    its own backward fails here)."""
    found = []
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
                owner = [f.name for f in funcs if f.lineno <= node.lineno <= f.end_lineno]
                found.append((str(path.relative_to(ROOT)), owner[-1] if owner else None))
    assert found and set(found) == {("engine/step.py", "train_step")}, found


def _collect(k):
    got = [[] for _ in range(k)]
    return got, [lambda m, s, i=i: got[i].append((s, dict(m))) for i in range(k)]


def test_every_loop_sends_its_records_to_the_live_sinks(task, text):
    """train (K = 1), stacked training (K = 2, model index = stack row), the LM (one and stacked) and MAML:
    each recorded point reaches `live.emit` exactly as it reaches the loop's own `log`."""
    cases = {
        "train": (1, lambda logs: pl.train(mlps(1)[0], task, steps=4, eval_every=2, log=logs[0])),
        "stack": (2, lambda logs: train_stack(mlps(2), task, lr=[0.1, 0.05], seed=[0, 1], steps=4, eval_every=2,
                                              log=logs)),
        "lm": (1, lambda logs: train_lm(lms(text, [0])[0], text, lr=2 ** -6, seed=0, eval_xy=text.eval_windows(2, 16),
                                        log=logs[0], **LM)),
        "lm_stack": (2, lambda logs: train_lm_stacked(lms(text, [0, 1]), text, lrs=[2 ** -6, 2 ** -7], seeds=[0, 1],
                                                      eval_xy=text.eval_windows(2, 16), logs=logs, **LM)),
        "maml": (1, lambda logs: maml.meta_train(*_maml_setup(), meta_batch=2, every=1, log=logs[0])),
    }
    for name, (k, run) in cases.items():
        logged, logs = _collect(k)
        sent, sinks = _collect(k)
        with live.sending_to(sinks):
            run(logs)
        assert all(logged) and sent == logged, name


def test_live_sink_of_a_diverged_stack_row_gets_the_divergence(task):
    ms = mlps(2, scheme="sp")
    sent, sinks = _collect(2)
    with live.sending_to(sinks):
        res = train_stack(ms, task, lr=[0.05, 1e4], seed=[0, 1], steps=6, eval_every=3)
    assert not res[0].diverged and res[1].diverged
    assert sent[1][-1][1] == {"train/loss": sent[1][-1][1]["train/loss"], "diverged": 1}
    assert math.isnan(sent[1][-1][1]["train/loss"])
    assert [s for s, _ in sent[0]] == [0, 3, 6]


def test_lm_divergence_is_the_one_rule_with_negative_control(text):
    """A finite loss above 1e3 x the first step's loss ends an LM run (as in `train`); with the factor off the
    same run goes on (only non-finite losses count)."""
    xy = text.eval_windows(2, 16)
    r = train_lm(lms(text, [0], scheme="sp")[0], text, lr=100.0, seed=0, eval_xy=xy, **LM)
    assert r.diverged and r.steps_done == 1 and r.val_loss == math.inf
    assert math.isfinite(r.train_losses[-1]) and r.train_losses[-1] > 1e3 * r.train_losses[0]
    off = train_lm(lms(text, [0], scheme="sp")[0], text, lr=100.0, seed=0, eval_xy=xy, diverge_factor=None, **LM)
    assert off.steps_done > 1
    # stacked: the diverging row drops out, the other one is the one-by-one run
    ra = train_lm_stacked(lms(text, [0, 1], scheme="sp"), text, lrs=[2 ** -6, 100.0], seeds=[0, 1], eval_xy=xy, **LM)
    rb = train_lm(lms(text, [0], scheme="sp")[0], text, lr=2 ** -6, seed=0, eval_xy=xy, **LM)
    assert ra[1].diverged and ra[1].steps_done == 1 and not ra[0].diverged
    assert ra[0].val_loss == pytest.approx(rb.val_loss, rel=1e-10)


def _maml_setup(n=6):
    from paramlab.experiments import maml as M

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 40, generator=g, dtype=F64), np.arange(60) % 5
    eps = M.train_episodes(y, np.arange(50, 60), k=2, n_query=3, n_way=5, n=n, seed=0)
    net = pl.mlp(40, 5, 32, scheme="mup", base_width=8, seed=1, dtype=F64)
    return net, [M._batch(x, y, e, F64) for e in eps], maml.inner_lrs(net, 0.3), 2


def test_maml_outer_step_is_the_query_gradient_at_the_adapted_parameters():
    """The straight-through query loss gives, by ordinary backward, grad L(theta_S): equal to autograd.grad
    at theta_S taken as leaves; a query loss at theta itself (no adaptation) is not."""
    net, eps, lrs, steps = _maml_setup(2)
    grads, _ = maml.fomaml_grads(net, eps, lrs, steps)
    want = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for xs, ys, xq, yq in eps:
        theta = {n: p.requires_grad_(True) for n, p in maml.adapt(net, maml.meta_params(net), lrs, xs, ys, steps).items()}
        loss = torch.nn.functional.cross_entropy(torch.func.functional_call(net, theta, (xq,)), yq)
        for n, g in zip(theta, torch.autograd.grad(loss, list(theta.values()))):
            want[n] += g / len(eps)
    assert max(float((grads[n] - want[n]).abs().max()) for n in want) < 1e-14
    plain, _ = maml.fomaml_grads(net, eps, lrs, 0)
    assert max(float((plain[n] - want[n]).abs().max()) for n in want) > 1e-6


def test_a_family_is_a_table_row(task, monkeypatch):
    """The stacked update refuses an optimizer without a kernel, naming the fix; a new row (here torch's SGD
    kernel under another name) trains a stack equal to one by one with no other change."""
    with pytest.raises(ValueError, match="no kernel for optimizer 'adafactor'.*one by one"):
        StackedUpdate(stack(mlps(2)), "adafactor", [1e-3] * 2, [0.0] * 2, [1e-8] * 2)
    monkeypatch.setitem(KERNELS, "plain_sgd", Kernel("sgd", ("buf",), KERNELS["sgd"].run))
    a, b = mlps(2), mlps(2)
    ra = train_stack(a, task, optimizer="plain_sgd", lr=[0.05, 0.02], seed=[0, 1], steps=10, eval_every=5,
                     batch_size=32, momentum=0.9)
    rb = train_sequential(b, task, optimizer="sgd", lr=[0.05, 0.02], seed=[0, 1], steps=10, eval_every=5,
                          batch_size=32, momentum=0.9)
    for x, y in zip(ra, rb):
        assert x.final["train/loss"] == pytest.approx(y.final["train/loss"], rel=1e-10)


def test_one_stacking_interface_and_rule(text):
    """stack() picks the MLP fast path for paramlab MLPs and the vmap path otherwise; the one FLOP rule keeps
    the measured decisions: MLPs up to ~1e8 FLOPs per model step on CPU (width 256 yes, 512 no, at batch 128
    and 32 inputs), Transformers at d_model 32 but not 64 (batch 16 x 32 tokens), none on one model, none for
    the vmap path on CUDA (not measured)."""
    assert isinstance(stack(mlps(2)), MLPStack)
    assert isinstance(stack(lms(text, [0, 1])), Stacked)
    x = torch.zeros(128, 32)
    mlp = lambda w: pl.mlp(32, 1, w, depth=2, scheme="mup", base_width=32)  # noqa: E731
    assert stacking_pays(mlp(256), x, 8) and not stacking_pays(mlp(512), x, 8) and not stacking_pays(mlp(64), x, 1)
    assert stacking_pays(mlp(1024), x, 8, device="cuda")
    tok = torch.zeros(16, 32, dtype=torch.long)
    tr = lambda w: pl.transformer(65, w, depth=2, n_heads=4, scheme="mup", base_width=32, max_len=32)  # noqa: E731
    assert stacking_pays(tr(32), tok, 8) and not stacking_pays(tr(64), tok, 8)
    assert not stacking_pays(tr(32), tok, 8, device="cuda")


def test_lm_lr_transfer_stacks_what_it_stacked_before():
    """The experiment's grid under the one rule: the same (width, device) points stack as under its former
    own rule (CPU and d_model <= 32)."""
    from paramlab.experiments.lm_lr_transfer import SIZES, batch_pays

    for size, p in SIZES.items():
        for w in p["widths"]:
            cfg = {**p, "width": w, "scheme": "mup", "seed": 0, "log2_lr": -8}
            assert batch_pays(cfg) == (p["device"] == "cpu" and w <= 32), (size, w)


def test_vmap_stack_trains_a_foreign_model_like_one_by_one(task):
    """A user's own module (parameterized under muP) stacks through the generic vmap path on a tensor task:
    stacked == one by one in float64 (Adam, per-model lr and seed), and a 0.1% lr change does not match."""

    def net(seed, width=32):
        torch.manual_seed(seed)
        m = torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.Tanh(), torch.nn.Linear(width, 1)).double()
        base = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        m = pl.parameterize(m, "mup", base=base, seed=seed)
        m(torch.zeros(1, 16, dtype=F64))  # paramlab's first-forward check runs once
        return m

    kw = dict(optimizer="adam", seed=[0, 1], steps=12, batch_size=32, eval_every=4)
    a, b, c = [net(0), net(1)], [net(0), net(1)], [net(0), net(1)]
    assert isinstance(stack(a), Stacked)
    ra = train_stack(a, task, lr=[1e-2, 3e-3], **kw)
    rb = train_sequential(b, task, lr=[1e-2, 3e-3], **kw)
    rc = train_sequential(c, task, lr=[1e-2, 3e-3 * 1.001], **kw)
    for x, y, z in zip(ra, rb, rc):
        assert [r["step"] for r in x.history] == [r["step"] for r in y.history]
        for rx, ry in zip(x.history, y.history):
            assert rx["train/loss"] == pytest.approx(ry["train/loss"], rel=1e-10)
    assert ra[1].final["train/loss"] != pytest.approx(rc[1].final["train/loss"], rel=1e-10)
    for ma, mb in zip(a, b):
        for pa, pb in zip(ma.parameters(), mb.parameters()):
            torch.testing.assert_close(pa.detach(), pb.detach(), rtol=1e-10, atol=1e-14)
