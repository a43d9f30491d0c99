"""lm_lr_transfer end to end at its tiny size (runs, store, offline wandb, shift table, plot, sample), and the
one-by-one LM loop's contracts: every scheme is one network at the base width, mf == muP off it (one
symmetry class, float64), SP is not (the negative control).

The predictions themselves (muP shift <= 1 step, SP >= 2 over 8x width) need the quick or default size;
their measured numbers are in docs/experiments.md."""

import math

import numpy as np
import pytest
import torch

import paramlab as pl
from paramlab.data.text import shakespeare_char
from paramlab.experiments import get
from paramlab.experiments import lm_lr_transfer as L
from paramlab.experiments.lm_lr_transfer import SIZES, shift_table
from paramlab.engine.lm import evaluate, sample, train_lm
from paramlab.records import find_wandb_offline_runs, load_runs

PROTO = dict(steps=5, batch=4, context=16)


@pytest.fixture(scope="module")
def task():
    return shakespeare_char()


def test_tiny_size_end_to_end(tmp_path, capsys, monkeypatch):
    out = get("lm_lr_transfer").run("tiny", root=tmp_path, use_wandb=True, progress=False, group="t")
    printed = capsys.readouterr().out
    assert "shift robust" in printed and "plot (lm_loss_vs_lr):" in printed
    size = SIZES["tiny"]
    recs = load_runs(tmp_path / "lm_lr_transfer" / "t")
    assert len(recs) == len(size["schemes"]) * len(size["widths"]) * len(size["log2_lrs"]) * size["seeds"]
    assert all(math.isfinite(r.summary["val/loss"]) or r.summary["diverged"] for r in recs)
    assert find_wandb_offline_runs(tmp_path / "lm_lr_transfer" / "t")
    # the base width is the same network under SP and muP: bitwise-equal val losses
    assert out["check_sp_equals_mup_at_base"] == {"max_abs_diff": 0.0, "same_divergence": True}
    assert set(out["verdicts"]) >= {"mup_shift_within_1_step", "mup_loss_falls_with_width", "sp_drifts_down_2_steps"}
    assert len(out["sample"]["text"]) == size["sample_chars"]
    assert (tmp_path / "lm_lr_transfer" / "t" / "summary" / "lm_loss_vs_lr.png").exists()
    # summarized again (every run complete): the sample is read from summary/parts/, not retrained
    path, calls = tmp_path / "lm_lr_transfer" / "t" / "summary" / "summary.json", []
    before = path.read_bytes()
    monkeypatch.setattr(L, "train_lm", lambda *a, **k: calls.append(a))
    get("lm_lr_transfer").run("tiny", root=tmp_path, use_wandb=False, progress=False, group="t")
    assert calls == [] and path.read_bytes() == before


def test_shift_table_reads_a_known_shift():
    """The summary's shift comes from the curves: synthetic results whose optimum moves by -2 steps between
    widths give a robust shift near -2 (and 0 when nothing moves: the negative control)."""
    lrs = list(range(-12, -2))
    p = {"schemes": ["a", "b"], "widths": [32, 256], "log2_lrs": lrs}
    results = []
    for s, moved in (("a", -2.0), ("b", 0.0)):
        for w, opt in ((32, -7.3), (256, -7.3 + moved)):
            for x in lrs:
                results.append(({"scheme": s, "width": w, "log2_lr": x, "seed": 0},
                                {"val/loss": 2.0 * math.exp(0.05 * (x - opt) ** 2), "diverged": 0}))
    t = shift_table(results, p)
    assert t["a"]["shift_robust"] == pytest.approx(-2.0, abs=1e-6) and t["a"]["shift_status"] == "ok"
    assert t["b"]["shift_robust"] == pytest.approx(0.0, abs=1e-6)


def models(task, width, schemes):
    return {s: pl.transformer(task.vocab_size, width, depth=2, n_heads=4, scheme=s, base_width=16, max_len=16, seed=0,
                              dtype=torch.float64) for s in schemes}


def test_base_width_schemes_coincide(task):
    xy = task.eval_windows(4, 16, seed=0)
    vals = {s: train_lm(m, task, lr=2 ** -6, seed=0, eval_xy=xy, **PROTO).val_loss
            for s, m in models(task, 16, ("sp", "ntk", "mup", "mf")).items()}
    assert len(set(vals.values())) == 1, vals


def test_mf_equals_mup_off_base_and_sp_does_not(task):
    """mf and muP are one symmetry class with Adam (paramlab's eps scaling): identical training at 4x the
    base width in float64; SP at the same width differs (the check can fail)."""
    xy = task.eval_windows(4, 16, seed=0)
    res = {s: train_lm(m, task, lr=2 ** -6, seed=0, eval_xy=xy, **PROTO)
           for s, m in models(task, 64, ("mup", "mf", "sp")).items()}
    np.testing.assert_allclose(res["mf"].train_losses, res["mup"].train_losses, rtol=1e-9)
    assert res["mf"].val_loss == pytest.approx(res["mup"].val_loss, rel=1e-9)
    assert abs(res["sp"].val_loss - res["mup"].val_loss) > 1e-3


def test_divergence_counts_as_inf_and_sample_is_deterministic(task):
    xy = task.eval_windows(4, 16, seed=0)
    m = models(task, 64, ("sp",))["sp"]
    r = train_lm(m, task, lr=1e150, seed=0, eval_xy=xy, **PROTO)
    assert r.diverged and r.val_loss == math.inf and r.steps_done < PROTO["steps"]
    m = models(task, 32, ("mup",))["mup"]
    assert math.isfinite(evaluate(m, *xy))
    assert sample(m, task, "ROMEO:\n", n=20, seed=1) == sample(m, task, "ROMEO:\n", n=20, seed=1)


def test_bad_task_is_refused_before_any_run(tmp_path):
    from paramlab.runners import SpecError

    with pytest.raises(SpecError, match="shakespeare_char"):
        get("lm_lr_transfer").run("tiny", root=tmp_path, use_wandb=False, progress=False, task="digits")
    assert not (tmp_path / "lm_lr_transfer").exists() or not any((tmp_path / "lm_lr_transfer").iterdir())


def test_lm_feature_learning_tiny(tmp_path):
    """Per-block movement of the Transformer LM: at the base width NTK and muP are one network (equal
    measurements, exactly); one width up, NTK's features already move less than muP's in every block
    (the kernel regime's 1/sqrt(m) factor on each Adam step; the width exponents need the default size)."""
    out = get("lm_feature_learning").run("tiny", root=tmp_path, use_wandb=False, progress=False, group="t")
    recs = {(r.config["scheme"], r.config["width"]): r.summary
            for r in load_runs(tmp_path / "lm_feature_learning" / "t")}
    blocks = ["tok_emb", "blocks.0", "blocks.1"]
    for n in blocks:
        assert recs[("ntk", 32)][f"{n}/feat"] == recs[("mup", 32)][f"{n}/feat"]
        assert recs[("ntk", 64)][f"{n}/feat"] < recs[("mup", 64)][f"{n}/feat"]
    assert set(out["verdicts"]["ntk_steeper_than_mup"]) == set(blocks)
    assert (tmp_path / "lm_feature_learning" / "t" / "summary" / "lm_feature_movement_vs_width.png").exists()


def test_sweep_stacked_equals_one_by_one(tmp_path):
    """The experiment's Batch (the lrs and seeds of one (scheme, width) as one functional stack), forced
    with `ensemble: always`, records the same val losses as `never` (float64; 1e-10)."""
    from paramlab.sweep import run_sweep

    recs = {}
    for mode in ("always", "never"):
        spec = {"runner": "lm_lr_transfer", "experiment": "lm_lr_transfer", "name": mode, "root": str(tmp_path),
                "wandb": False, "ensemble": mode,
                "grid": {"scheme": ["mup"], "width": [64], "log2_lr": [-8, -6], "seed": [0, 1]},
                "fixed": {"steps": 6, "batch": 4, "context": 16, "n_eval": 4, "dtype": "float64", "base_width": 32}}
        assert run_sweep(spec, progress=False).finished == 4
        recs[mode] = {(r.config["log2_lr"], r.config["seed"]): r for r in load_runs(tmp_path / "lm_lr_transfer" / mode)}
    assert {r.meta["sweep"]["ensemble"] for r in recs["always"].values()} == {4}
    for key, a in recs["always"].items():
        assert a.summary["val/loss"] == pytest.approx(recs["never"][key].summary["val/loss"], rel=1e-10)


def test_plot_of_a_grid_where_every_run_diverged_draws(tmp_path):
    """Every loss NaN (all runs diverged): the figure is drawn without axis limits, not a NaN-limit crash."""
    import math

    from paramlab.experiments.lm_lr_transfer import _plot

    nan = float("nan")
    row = lambda w: {"width": w, "mean_curve": [nan, nan], "status": "no optimum", "robust": nan}  # noqa: E731
    table = {s: {"per_width": [row(32), row(64)], "shift_robust": nan, "shift_se": nan,
                 "best_loss_by_width": [nan, nan]} for s in ("sp", "mup")}
    path = _plot(table, {"widths": [32, 64], "log2_lrs": [-8, -6], "steps": 2, "batch": 2, "context": 4}, tmp_path)
    assert path.exists() and math.isnan(table["sp"]["best_loss_by_width"][0])
