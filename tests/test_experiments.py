"""The five experiments at --quick size: each runs end to end, logs to the local store and to offline
wandb, and its summary goes the way the theory says (loose bounds; the tight ones are checked at the
default size and reported in the README)."""

import dataclasses
import json
import math

import pytest

from paramlab.compare import compare
from paramlab.experiments import get
from paramlab.records import find_wandb_offline_runs, load_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def run(name, root, size="quick", **kw):
    return get(name).run(size, root=root, use_wandb=True, progress=False, group="test", **kw)


@pytest.fixture(scope="module")
def transfer(root):
    return run("transfer", root)


def test_transfer_muP_features_transfer_and_beat_kernels(transfer):
    v, kern = transfer["verdicts"], transfer["kernel_baselines"]
    assert v["mup"]["positive_everywhere"], v["mup"]["gain"]
    assert v["mup"]["gain_per_doubling"] > -0.05  # does not shrink with width
    assert v["ntk"]["gain"][-1] < v["mup"]["gain"][-1]
    assert v["mup"]["probe_at_largest"] > max(kern.values())


def test_every_run_is_in_the_local_store_and_in_offline_wandb(transfer, root):
    recs = load_runs(root / "transfer" / "test")  # the summary is not a run: discovery skips its folder
    assert len(recs) == 8 and all(r.status == "finished" for r in recs)
    assert all(r.history and "train/loss" in r.history[-1] for r in recs)
    offline = find_wandb_offline_runs(root / "transfer" / "test")
    assert len(offline) == len(recs)  # one offline wandb run per grid point, with its config readable
    assert sorted(w.config["scheme"] + str(w.config["width"]) for w in offline) == \
        sorted(r.config["scheme"] + str(r.config["width"]) for r in recs)
    summary = json.loads((root / "transfer" / "test" / "summary" / "summary.json").read_text())
    # one store layout: the summary (and its wandb run) in its own folder beside the runs, a record of its own
    # kind (no run files), not nested below them
    assert (root / "transfer" / "test" / "summary" / "summary.md").exists()
    assert not (root / "transfer" / "test" / "summary" / "meta.json").exists()
    assert len(find_wandb_offline_runs(root / "transfer" / "test" / "summary")) == 1
    assert not (root / "transfer" / "test" / "transfer").exists()
    assert (root / "transfer" / "test" / "summary" / "transfer_gain_vs_width.png").stat().st_size > 10_000
    assert summary["rows"]
    # paramlab compare redraws the metrics from the local store alone
    out = compare([root / "transfer" / "test"], out=root / "cmp")
    assert out["n_runs"] == 8 and (root / "cmp" / "B_probe_gain.png").exists()
    assert out["slopes"]["B/probe"]["mup"] > out["slopes"]["B/probe"]["ntk"]


def test_feature_learning_exponents(root):
    v = run("feature_learning", root)["verdicts"]
    key = "slope:feat/last/rel_change"
    assert v["ntk"][key] < -0.3 and v["sp-stable"][key] < -0.3
    assert abs(v["mup"][key]) < 0.25 and abs(v["mf"][key] - v["mup"][key]) < 1e-6
    assert v["ntk"]["slope:ntk/rel_change"] < -0.5 < v["mup"]["slope:ntk/rel_change"]


def test_lr_transfer_optimum_moves_under_sp_not_mup(root):
    v = run("lr_transfer", root)["verdicts"]
    assert abs(v["mup"]["shift_steps"]) <= 1 and v["mup"]["spread_steps"] <= 1
    assert abs(v["sp"]["shift_steps"]) >= 1


def test_lr_transfer_batched_grid_equals_one_by_one(tmp_path):
    """The grid's small widths train as stacked ensembles (its Batch, under the sweep's ``ensemble: auto``):
    the same summaries as the same sweep run one by one (``ensemble: never``).

    Compared in float64, where the two orders of arithmetic agree to ~1e-13; in float32 they differ by
    up to 1e-5 (one rounding step of a small bias's update), more at an unstable lr.
    """
    from paramlab.sweep import run_sweep

    exp = get("lr_transfer")
    p = exp.params("tiny", {"dtype": "float64", "log2_lrs": [-10, -8, -6], "seeds": 2})
    batched = exp.run("tiny", root=tmp_path, use_wandb=False, progress=False, group="b", **{
        k: p[k] for k in ("dtype", "log2_lrs", "seeds")})
    alone = run_sweep(dataclasses.replace(exp.spec(p, root=tmp_path, group="s", use_wandb=False), ensemble="never"),
                      progress=False)
    recs = {g: {json.dumps(r.config, sort_keys=True): r for r in load_runs(tmp_path / "lr_transfer" / g)}
            for g in ("b", "s")}
    assert len(recs["b"]) == len(recs["s"]) == alone.total == 2 * 2 * 3 * 2
    assert {r.meta["sweep"]["ensemble"] for r in recs["b"].values()} == {6}  # lrs x seeds of one (scheme, width)
    assert {r.meta["sweep"]["ensemble"] for r in recs["s"].values()} == {1}
    for key, rb in recs["b"].items():
        rs = recs["s"][key]
        assert rb.summary.keys() == rs.summary.keys()
        for k, v in rs.summary.items():
            expect = v if isinstance(v, str) else pytest.approx(v, rel=1e-10, abs=1e-12, nan_ok=True)
            assert rb.summary[k] == expect, (key, k)
    assert batched["verdicts"]["mup"]["optima"]


def test_kernel_limit_ntk_converges_to_its_kernel_mup_does_not(root):
    out = run("kernel_limit", root)
    v, kern = out["verdicts"], out["kernel_models"]
    assert v["ntk"]["dist_slope"] < -0.3
    assert v["mup"]["dist_slope"] > v["ntk"]["dist_slope"] + 0.2
    assert v["mup"]["test_mse_at_largest"] < min(kern.values())
    assert math.isfinite(v["mup"]["test_mse_at_largest"])


def test_coord_check_verdicts(root):
    v = run("coord_check", root)["verdicts"]
    assert v["mup"]["activations_passed"] and v["mf"]["activations_passed"]
    assert not v["sp"]["activations_passed"] and v["sp"]["max_act_slope"] > 0.5


def test_experiment_runs_as_a_resumable_sweep(tmp_path):
    from paramlab.sweep import run_sweep

    spec = {"runner": "kernel_limit", "experiment": "kernel_limit", "name": "s", "root": str(tmp_path), "wandb": False,
            "grid": {"scheme": ["ntk", "mup"], "width": [64, 128], "seed": [0]},
            "fixed": {"steps": 5, "n_train": 32, "n_test": 32, "dtype": "float32"}}
    first = run_sweep(spec, progress=False)
    assert first.ok and first.total == 4
    recs = load_runs(tmp_path / "kernel_limit" / "s")
    assert len(recs) == 4 and all("dist_to_ntk_prediction" in r.summary and r.history for r in recs)
    again = run_sweep(spec, progress=False)
    assert again.skipped == 4  # nothing runs twice


def test_lr_transfer_sweep_stacks_lrs_and_matches_unstacked(tmp_path):
    """`paramlab sweep` with the lr_transfer runner: `ensemble: always` trains the lrs of one width as
    one stacked pass (the runner's Batch) and records the same summaries and histories as `never`."""
    from paramlab.sweep import run_sweep

    reports = {}
    for mode in ("always", "never"):
        spec = {"runner": "lr_transfer", "experiment": "lr_transfer", "name": mode, "root": str(tmp_path),
                "wandb": False, "ensemble": mode, "grid": {"scheme": ["mup"], "width": [32], "log2_lr": [-10, -8, -6],
                                                          "seed": [0]},
                "fixed": {"task": "digits", "steps": 20, "base_width": 32, "dtype": "float64"}}
        reports[mode] = run_sweep(spec, progress=False)
        assert reports[mode].ok and reports[mode].finished == 3
    recs = {m: {r.config["log2_lr"]: r for r in load_runs(tmp_path / "lr_transfer" / m)} for m in reports}
    assert {r.meta["sweep"]["ensemble"] for r in recs["always"].values()} == {3}
    assert {r.meta["sweep"]["ensemble"] for r in recs["never"].values()} == {1}
    for lr, a in recs["always"].items():
        b = recs["never"][lr]
        for k in ("train/loss", "test/loss", "test/acc"):
            assert a.summary[k] == pytest.approx(b.summary[k], rel=1e-10, abs=1e-12), (lr, k)
        assert [h["step"] for h in a.history] == [h["step"] for h in b.history]
