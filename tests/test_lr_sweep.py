"""pl.lr_sweep: the muTransfer recipe on the user's own build(width) and train_eval(model, lr).

The theory it checks (TP5): under muP with Adam the best lr does not move with width; under SP it
moves towards small lr (about 1/width). Both are measured here on a tiny task, muP against the SP
negative control; resume, divergence as +inf and the seed trap are checked on the same machinery.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import paramlab as pl
from paramlab.measure.seeds import SeedWarning

torch.set_num_threads(1)

G = torch.Generator().manual_seed(0)
X = torch.randn(256, 8, generator=G)
Y = torch.tanh(X @ torch.randn(8, 1, generator=G)) + 0.1 * torch.randn(256, 1, generator=G)


def _train_eval(model, lr, steps=60):
    opt = pl.optimizer(model, "adam", lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(X) - Y).pow(2).mean()
        if not torch.isfinite(loss):
            return float("nan")
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((model(X) - Y).pow(2).mean())


def _mnist1d_train_eval():
    """A user's loop on mnist1d: Adam through pl.optimizer, 100 minibatch steps, held-out cross-entropy."""
    from paramlab import data as D

    task = D.get_task("mnist1d")
    xtr, ytr, xte, yte = task.x_train[:2000], task.y_train[:2000], task.x_test[:500], task.y_test[:500]

    def train_eval(model, lr):
        opt = pl.optimizer(model, "adam", lr=lr)
        g = torch.Generator().manual_seed(0)
        for _ in range(100):
            idx = torch.randint(0, len(xtr), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            if not torch.isfinite(loss):
                return float("nan")
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(xte), yte))

    return task, train_eval


def test_mlp_mup_optimum_stays_sp_drifts(tmp_path):
    """8x width on mnist1d (held-out loss, 2 seeds). Measured: muP +0.09 +- 0.18 log2 steps, SP -2.27 +- 0.30."""
    task, train_eval = _mnist1d_train_eval()
    grid = dict(widths=[32, 256], log2_lrs=list(range(-11, -2)), seeds=2, root=tmp_path)
    mup = pl.lr_sweep(lambda w: pl.mlp(task.d_in, task.d_out, w, depth=2, scheme="mup", base_width=32), train_eval,
                      **grid)
    sp = pl.lr_sweep(lambda w: pl.mlp(task.d_in, task.d_out, w, depth=2, scheme="sp", base_width=32), train_eval,
                     **grid)
    print(mup.table())
    print(sp.table())
    assert mup.scheme == "mup" and sp.scheme == "sp"
    assert mup.losses.shape == (2, 2, 9)
    # at the base width the two schemes are one network: same curves, bit for bit
    np.testing.assert_array_equal(mup.losses[0], sp.losses[0])
    assert all(o.status == "ok" for o in mup.optima + sp.optima)
    # muP's optimum stays within a grid step (and its interval covers a zero shift); SP's drifts to small lr
    assert abs(mup.shift) < 1.0 and abs(mup.shift) < 1.96 * mup.shift_se + 0.5
    assert sp.shift < -1.5
    assert "transfers" in mup.verdict() and "does NOT transfer" in sp.verdict()
    assert mup.lr == pytest.approx(2 ** mup.optima[-1].x)
    assert mup.plot.exists() and mup.plot.stat().st_size > 10_000


class MyNet(nn.Module):
    """A user's own module: a 2-hidden-layer MLP with LayerNorm, parameterized by paramlab."""

    def __init__(self, width, device=None):
        super().__init__()
        self.inp = nn.Linear(8, width, device=device)
        self.norm = nn.LayerNorm(width, device=device)
        self.hid = nn.Linear(width, width, device=device)
        self.out = nn.Linear(width, 1, device=device)

    def forward(self, x):
        return self.out(torch.relu(self.hid(torch.relu(self.norm(self.inp(x))))))


def _build_own(width):
    # delta=: the model at a second width, so the base width itself (32) can be built too
    return pl.parameterize(MyNet(width), "mup", base=MyNet(32, device="meta"), delta=MyNet(64, device="meta"))


def test_own_module_resumes_and_counts_divergence(tmp_path):
    calls = []

    def train_eval(model, lr):
        calls.append(lr)
        return float("inf") if lr > 2 ** -3 else _train_eval(model, lr, steps=30)

    kw = dict(widths=[32, 64], log2_lrs=[-10, -8, -6, -4, -2], seeds=2, root=tmp_path, plot=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeedWarning)  # different seeds: no seed-trap warning
        res = pl.lr_sweep(_build_own, train_eval, **kw)
    assert len(calls) == 20
    assert np.all(np.isinf(res.losses[:, :, -1])) and np.all(np.isfinite(res.losses[:, :, :-1]))
    statuses = {r["status"] for r in res.runs if r["config"]["log2_lr"] == -2}
    assert statuses == {"diverged"}
    again = pl.lr_sweep(_build_own, train_eval, **kw)  # same call: everything complete, nothing reruns
    assert len(calls) == 20
    np.testing.assert_array_equal(again.losses, res.losses)
    pl.lr_sweep(_build_own, train_eval, **{**kw, "seeds": 3})  # one more seed: only its 10 runs
    assert len(calls) == 30


def test_seed_trap_warns_and_spread_is_zero(tmp_path):
    def fixed_seed(width):  # the trap: the README's seed=0 copied into a factory
        return pl.parameterize(MyNet(width), "mup", base=MyNet(32, device="meta"), delta=MyNet(64, device="meta"),
                               seed=0)

    with pytest.warns(SeedWarning, match="identical networks"):
        res = pl.lr_sweep(fixed_seed, lambda m, lr: _train_eval(m, lr, steps=5), widths=[32, 64],
                          log2_lrs=[-8, -6, -4], seeds=2, root=tmp_path, plot=False)
    np.testing.assert_array_equal(res.losses[:, 0], res.losses[:, 1])  # what the warning is about


def test_coord_check_seed_trap():
    from paramlab.measure import coord_check

    x, y = X[:16], Y[:16]
    with pytest.warns(SeedWarning, match="seeds 0 and 1"):
        coord_check(lambda w: pl.mlp(8, 1, w, scheme="mup", seed=0), [32, 64], x, y, steps=1, seeds=2,
                    quantities=("act/rms",))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeedWarning)
        coord_check(lambda w: pl.mlp(8, 1, w, scheme="mup"), [32, 64], x, y, steps=1, seeds=2,
                    quantities=("act/rms",))


def test_seed_fingerprint_samples_every_tensor_across_its_length():
    """The seed trap's fingerprint keeps <= 256 evenly spaced entries per tensor (not a second copy of the
    model), from the whole tensor: a change in its last rows changes the fingerprint."""
    from paramlab.measure.seeds import fingerprint, same_network

    a = torch.nn.Linear(512, 512)
    fa = fingerprint(a)
    assert [t.numel() for t in fa] == [256, 256]
    with torch.no_grad():
        a.weight[-2:] += 1.0  # the last 2 of 512 rows: entries 261632.. of the flattened weight
    assert not same_network(fa, fingerprint(a))
    assert same_network(fingerprint(a), fingerprint(a))


def test_bad_grid_and_bad_return_are_refused(tmp_path):
    build = lambda w: pl.mlp(8, 1, w, scheme="mup")  # noqa: E731
    with pytest.raises(ValueError, match="widths"):
        pl.lr_sweep(build, _train_eval, widths=[64], log2_lrs=[-3, -2, -1], root=tmp_path)
    with pytest.raises(ValueError, match="log2_lrs"):
        pl.lr_sweep(build, _train_eval, widths=[32, 64], log2_lrs=[-1, -2, -3], root=tmp_path)
    with pytest.raises(ValueError, match="axes"):
        pl.lr_sweep(build, _train_eval, widths=[32, 64], log2_lrs=[-3, -2, -1], root=tmp_path, config={"seed": 1})
    with pytest.raises(RuntimeError, match="must return a float"):
        pl.lr_sweep(build, lambda m, lr: "0.3", widths=[32, 64], log2_lrs=[-3, -2, -1], seeds=1, root=tmp_path,
                    plot=False)


def test_a_changed_setup_is_not_resumed(tmp_path):
    """Two sweeps whose callables have the same source but build different schemes (a loop variable), or
    train a different number of steps (a captured scalar), get their own runs: never the other's results."""
    kw = dict(widths=[32, 64], log2_lrs=[-8, -6, -4], seeds=1, root=tmp_path, plot=False)
    out = {}
    for scheme in ("mup", "sp"):
        for steps in (3, 5):
            out[scheme, steps] = pl.lr_sweep(lambda w: pl.mlp(8, 1, w, scheme=scheme, base_width=32),
                                             lambda m, lr: _train_eval(m, lr, steps=steps), **kw)
    assert len({r.path for r in out.values()}) == 4
    assert out["mup", 3].scheme == "mup" and out["sp", 3].scheme == "sp"
    assert not np.array_equal(out["mup", 3].losses[1], out["sp", 3].losses[1])
    assert not np.array_equal(out["mup", 3].losses, out["mup", 5].losses)
