"""Dry runs of the one-thread benchmarks at tiny sizes: they run, write their JSON, and record what
run_all.sh's summary reads (ratios with ranges, ceilings, the null of the hook benchmark)."""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("hook_overhead", "coord_vs_mup", "optim_step", "stacked_transformer", "_common"):
        sys.modules.pop(name, None)


def test_hook_overhead_dry_run(bench, tmp_path):
    import hook_overhead

    out = tmp_path / "hook.json"
    hook_overhead.main(["--widths", "64", "128", "--models", "mlp", "transformer", "--rounds", "2", "--steps", "1",
                        "--target-min-width", "128", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["width"]) for r in rows] == [("mlp", 64), ("mlp", 128), ("transformer", 64), ("transformer", 128)]
    for r in rows:
        assert {"overhead_pct", "overhead_pct_range", "null_pct", "null_pct_range", "isolated_pct"} <= set(r)
        if r["width"] == 64:  # no hook, nothing to isolate
            assert r["isolated_pct"] == 0.0
        # muP at its base width has no multiplier; above it, the readout's input multiplier
        assert r["hooks"] == ([] if r["width"] == 64 else ["readout: InputScale"])
        assert (r["target_pct"] is not None) == (r["width"] >= 128)


def test_coord_vs_mup_dry_run_agrees_with_mup(bench, tmp_path):
    pytest.importorskip("mup")
    import coord_vs_mup

    out = tmp_path / "coord.json"
    coord_vs_mup.main(["--widths", "64", "128", "--seeds", "1", "--repeats", "1", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["values_agree"] and r["records_compared"] > 0
    assert r["clock"] == "cpu" and r["speedup_vs_mup"] > 0 and r["max_speedup_vs_mup"] > 0
    # each side's defaults: paramlab's records its seven statistics, none of them spectral, act/l1 equal to mup's
    assert r["speedup_vs_mup_default"] > 0 and r["default_values_agree"]
    assert r["paramlab_default_quantities"] == sorted(["act/rms", "act/l1", "dact/rms", "dact/l1", "W/rms", "dW/rms",
                                                       "upd/rms"])


def test_optim_step_dry_run_times_known_families_and_skips_unknown_ones(bench, tmp_path):
    import optim_step

    out = tmp_path / "optim.json"
    optim_step.main(["--families", "adam", "muon", "--models", "mlp", "--widths", "128", "--rounds", "1", "--steps", "1",
                     "--out", str(out)])
    r = json.loads(out.read_text())
    assert [(x["family"], x["model"], x["width"]) for x in r["results"] if x["family"] == "adam"] == [("adam", "mlp", 128)]
    for x in r["results"]:
        assert {"overhead_pct", "overhead_pct_range", "null_pct", "target_pct", "floor_pct", "beyond_floor_pct"} <= set(x)
        assert x["steps_per_call"] == 1
        # the floor (plain torch with paramlab's groups) exists for a single torch optimizer, not for the Muon hybrid
        assert (x["floor_pct"] is None) == (x["family"] == "muon")
        if x["family"] == "adam":  # above the base width muP gives input, hidden and output layers other lrs: 2+ groups
            assert x["param_groups"] >= 2 and x["beyond_floor_pct_range"] is not None
    # muon: timed where paramlab.optimizer builds it, else listed as skipped with the reason
    assert ("muon" in r["skipped"]) != any(x["family"] == "muon" for x in r["results"])


def test_stacked_transformer_dry_run_takes_ratios_within_rounds(bench, tmp_path):
    import stacked_transformer

    out = tmp_path / "stacked.json"
    stacked_transformer.main(["--k", "2", "--widths", "32", "--steps", "2", "--batch", "2", "--context", "8",
                              "--repeats", "3", "--out", str(out)])
    (r,) = json.loads(out.read_text())["results"]
    assert r["clock"] == "cpu" and all(len(v) == 3 for v in r["times"].values())
    t = r["times"]
    for n in ("stacked", "stacked-explicit"):
        # each ratio is the median over rounds of the same round's sequential / stacked (and big-batch / stacked)
        per_round = sorted(a / b for a, b in zip(t["sequential"], t[n]))
        assert r["speedup"][n] == pytest.approx(per_round[1], abs=1e-3)
        assert r["speedup_range"][n] == pytest.approx([per_round[0], per_round[-1]], abs=1e-3)
        frac = sorted(b / a for a, b in zip(t[n], t["big-batch"]))
        assert r["fraction_of_big_batch"][n] == pytest.approx(frac[1], abs=1e-3)
    assert r["big_batch_ceiling"] == pytest.approx(sorted(a / b for a, b in zip(t["sequential"], t["big-batch"]))[1],
                                                   abs=1e-3)



def test_optim_step_floor_is_the_same_update_as_paramlab(bench):
    """The floor side (plain torch with paramlab's groups, effective lrs written in) takes paramlab's exact step;
    the plain one-group optimizer does not (the control)."""
    import copy

    import optim_step
    import paramlab as pl

    model, loss = optim_step.make("mlp", 128)
    ours = [pl.optimizer(optim_step.with_grads(model, loss), "adam", lr=1e-2)]
    twin_m, plain_m = (optim_step.with_grads(copy.deepcopy(model), loss) for _ in range(2))
    grouped = optim_step.grouped_twin(ours, model, twin_m)
    plain = optim_step.plain_optimizer("adam", plain_m, 1e-2)
    for opts in (ours, grouped, plain):
        optim_step.stepper(opts, 2)()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin_m.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), plain_m.parameters()))
