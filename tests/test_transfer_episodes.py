"""The transfer experiment on real-data pairs at its tiny size: per-pair options, the
many-draw probe, the kernel baselines on the same draws, the fresh readout for another output size."""

import copy

import numpy as np
import pytest
import torch

import paramlab as pl
from paramlab import data as D
from paramlab.data.episodes import Episodes
from paramlab.experiments import get
from paramlab.experiments import transfer as T
from paramlab.kit import transfer_episodes as TE


@pytest.fixture(scope="module")
def exp():
    return get("transfer")


def test_pair_sizes_replace_the_defaults_and_overrides_win(exp):
    p = exp.params("quick", {"task": "shakespeare_w2v"})
    assert (p["model"], p["optimizer"], p["lr"], p["steps"]) == ("cbow", "adam", 3e-3, 1000)
    assert exp.params("default", {"task": "shakespeare_w2v"})["steps"] == 2000
    p = exp.params("quick", {"task": "mnist1d_disjoint", "lr": 0.05, "widths": [64, 128]})
    assert (p["model"], p["lr"], p["widths"], p["shots"]) == ("mlp", 0.05, [64, 128], [1, 5])
    assert exp.params("quick", {})["task"] == "multi_index" and "shots" not in exp.params("quick", {})
    assert {"shots", "n_episodes", "vocab", "model"} <= set(exp.options())  # the sweep runner takes them


def test_wrong_model_for_the_inputs_is_refused(exp):
    cfg = {**exp.params("tiny", {"task": "shakespeare_w2v"}), "model": "mlp", "scheme": "mup", "width": 16, "seed": 0}
    with pytest.raises(ValueError, match="token-id inputs: use model=cbow"):
        TE.run_one(cfg, lambda *a: None, T._finetune)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {t: get("transfer").run("tiny", root=root, use_wandb=False, progress=False, group=t, task=t)
           for t in ("mnist1d_compose", "shakespeare_w2v")}
    return root, out


def test_tiny_runs_end_to_end(tiny_runs):
    root, out = tiny_runs
    for task, s in out.items():
        p = s["params"]
        assert s["verdicts"].keys() == {f"k{k}" for k in p["shots"]}
        for v, vv in s["verdicts"].items():
            assert set(vv["schemes"]) == set(p["schemes"])
            assert vv["schemes"]["mup"]["regime"] == "feature learning" and vv["schemes"]["ntk"]["regime"] == "kernel"
            assert set(vv["prediction"]) == {"feature_learning_gain_positive", "feature_learning_not_shrinking",
                                             "kernel_gain_falls", "beats_kernels"}
            assert len(s["kernel_baselines"][v]["nngp"]) == p["n_episodes"]
            assert set(vv["gap_at_largest"]) == {"mup - ntk"}
            g = vv["schemes"]["mup"]["gain"]
            assert g[0] == pytest.approx(vv["schemes"]["ntk"]["gain"][0], abs=1e-12)  # base width: one network
        assert (root / "transfer" / task / "summary" / "transfer_gain_vs_width.png").stat().st_size > 10_000


def test_a_second_summary_reads_the_stored_kernel_baselines(tiny_runs, monkeypatch):
    """Summarizing the group again (the same command: every run is complete) reads the kernel baselines
    from summary/parts/ instead of computing them, and writes the same summary.json byte for byte."""
    root, _ = tiny_runs
    task = "mnist1d_compose"
    path = root / "transfer" / task / "summary" / "summary.json"
    before, calls = path.read_bytes(), []
    monkeypatch.setattr(TE, "kernel_baselines", lambda p: calls.append(p) or {})
    get("transfer").run("tiny", root=root, use_wandb=False, progress=False, group=task, task=task)
    assert calls == [] and path.read_bytes() == before
    assert len(list((path.parent / "parts").glob("kernel_baselines-*.json"))) == 1


def test_finetune_with_a_fresh_readout_of_another_size(tiny_runs):
    """mnist1d_compose: A has 10 outputs, B 2: the fine-tune gets a fresh 2-way readout."""
    from paramlab.records import load_runs

    root, _ = tiny_runs
    recs = load_runs(root / "transfer" / "mnist1d_compose")
    assert recs and all(np.isfinite(r.summary["B/k1/finetune"]) for r in recs)


def test_fresh_readout_keeps_the_output_plan():
    m = pl.mlp(8, 10, 128, scheme="mup", base_width=32, seed=0)
    lr_of = lambda mod: {n: g["lr"] for g in pl.optimizer(mod, "sgd", lr=0.1).param_groups for n in g["names"]}  # noqa: E731
    before = lr_of(m)
    m2 = TE.fresh_readout(copy.deepcopy(m), 3)
    assert m2(torch.randn(4, 8)).shape == (4, 3) and float(m2.readout.weight.detach().abs().sum()) == 0
    assert lr_of(m2) == before
    # the readout's multiplier (1/m under muP) still applies: a unit readout gives the muP-scaled output
    with torch.no_grad():
        m2.readout.weight.fill_(1.0)
        m3 = copy.deepcopy(m)
        m3.readout.weight.fill_(1.0)
        m3.readout.bias.zero_()
    x = torch.randn(4, 8)
    assert torch.allclose(m2(x)[:, 0], m3(x)[:, 0], atol=1e-5)
    m4 = TE.fresh_readout(copy.deepcopy(m), 10)  # same size: zeroed in place
    assert m4.readout.weight.shape == (10, 128) and float(m4.readout.weight.detach().abs().sum()) == 0


def test_pooled_probe_equals_the_one_draw_probe():
    """The batched path (pool features once, index per draw) gives what the one-draw Task path gives;
    a draw scored with another draw's labels does not (negative control)."""
    A, B = D.transfer_episodes("mnist1d_compose", k=2, n_episodes=3)
    m = pl.mlp(A.d_in, A.d_out, 64, scheme="mup", seed=0)
    pooled = TE.probe_episodes(TE.pool_features(m, B.x), B)
    one = [T._probe(m, A, B.task(e)) for e in range(3)]
    assert np.array_equal(pooled, np.array(one))
    wrong = copy.copy(B.episode_labels)
    wrong[0], wrong[1] = wrong[1], wrong[0]
    B_wrong = Episodes(B.name, B.x, B.y, 2, B.episodes, B.meta, episode_labels=wrong)
    assert not np.array_equal(TE.probe_episodes(TE.pool_features(m, B.x), B_wrong), pooled)


def test_text_kernels_are_the_constant_predictor():
    """Two different words have NNGP/NTK 0 (TP4 §9): every held-out word gets the same prediction, so
    the kernels' accuracy is one class's share of the test words."""
    p = {**get("transfer").params("tiny", {"task": "shakespeare_w2v"})}
    kern = TE.kernel_baselines(p)["k4"]
    _, Bs = TE.episode_tasks(p)
    B = Bs["k4"]
    for e, (tr, te) in enumerate(B.episodes):
        shares = np.bincount(B.labels(e)[te].numpy(), minlength=B.n_classes) / len(te)
        for k in ("nngp", "ntk"):
            assert np.isclose(shares, kern[k][e], atol=1e-12).any(), (k, kern[k][e], shares)
