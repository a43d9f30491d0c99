"""transfer: which schemes learn features that transfer to a new task?

Pretrain an MLP on task A, then solve a few-shot task B two ways. The first is a linear probe on
the frozen last-hidden features (ridge chosen by leave-one-out, `measure.probe`). The second is a
low-LR fine-tune with a fresh zero readout. Each is compared with the same procedure applied to
the *initial* network; every preset has the same effective init, so the initial features are the
same for all schemes. The difference is the transfer gain. The NNGP and NTK kernel regressors on
task B (the infinite-width GP / NTK models, `measure.kernels`) are baselines.

Prediction (TP4; the seed post "NTK/GP models of neural nets can't learn features"):
- under muP and MF the gain is positive at every width and does not shrink with width;
- under NTK and SP-with-stable-LR the features freeze as width grows, so the gain goes to 0 and
  the probe tends to the probe at init (which itself tends to a kernel method).

Default task: a multi-index teacher. A is y = g_A(U x) and B is y = g_B(U x), with the same rank-2
subspace U in d = 32 and 64 examples for B.

Real-data pairs (``--set task=NAME``; `paramlab.data.EPISODE_PAIRS`): B is a pool with
`n_episodes` few-shot draws for each shot count in `shots`. One network trained on A is probed on
every draw (features of the pool once at init, once trained; one ridge solve per draw); a run
reports the mean over draws, the summary gives 95% t-intervals over seeds. The NNGP / NTK kernel
regressors run on the same draws. Each pair has its own sizes (`PAIR_SIZES`: model, optimizer, lr
and steps chosen on A at the base width only), which `--set task=NAME` selects before other --set:
  mnist1d_disjoint   MLP on mnist1d classes 0-4 -> 1 / 5 shots of classes 5-9
  mnist1d_compose    MLP on 10-way mnist1d -> "is the digit in S" for a random half S of the classes
  shakespeare_w2v    CBOW word model (`models.cbow`) on tiny Shakespeare -> category of held-out words
  digits_disjoint, shakespeare_plays: pairs where the gap did not show (docs/experiments.md).
Token-id tasks get the CBOW model and bag-of-words kernels (a 1-hidden-layer linear net, TP4 §9).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch

from .. import data as D
from .. import live
from ..measure.fit import slope_per_doubling
from ..measure.kernels import MLPKernel
from ..measure.probe import kernel_ridge_loo, linear_probe, score
from ..models.mlp import mlp
from ..models.activations import GAINS
from ..report import describe_size, plot_vs_width, pyplot, save_figure
from ..runners import Option
from ..train import train
from ..kit import command
from ..kit import transfer_episodes as TE
from ..kit.checks import check_transfer_pair
from ..kit.experiment import Experiment
from ..kit.summary import Summary, by_width, stored

NAME = "transfer"
_BASE = dict(task="multi_index", depth=2, activation="relu", base_width=64, optimizer="sgd", lr=0.1,
             batch_size=128, ft_lr_ratio=0.1, data_seed=0)
SIZES = {
    "tiny": {**_BASE, "schemes": ["ntk", "mup"], "widths": [64, 128], "seeds": 1, "steps": 40, "ft_steps": 20,
             "base_width": 32, "n_train": 512},
    "quick": {**_BASE, "schemes": ["ntk", "mup"], "widths": [128, 256, 512, 1024], "seeds": 1, "steps": 300,
              "ft_steps": 100, "n_train": 2048},
    "default": {**_BASE, "schemes": ["sp-stable", "ntk", "mf", "mup"], "widths": [128, 256, 512, 1024, 2048],
                "seeds": 2, "steps": 500, "ft_steps": 200, "n_train": 2048},
}


def tasks(p: dict):
    kw = {"seed": p["data_seed"]}
    if p["task"] == "multi_index":
        kw["n_train"] = p["n_train"]
    return D.transfer_pair(p["task"], **kw)


def _score_key(task) -> str:
    return "acc" if task.kind == "classification" else "r2"


def _probe(model, A, B) -> float:
    with torch.no_grad():
        pred, _ = linear_probe(model.features(B.x_train), B.targets("train"), model.features(B.x_test))
    return score(pred, B.y_test)[_score_key(B)]


def _finetune(model, B, p: dict) -> float:
    """Zero a fresh readout for B and fine-tune every layer at lr * ft_lr_ratio (full batch).

    Where B has another output size than A, the readout's tensors are replaced by zero tensors of
    B's size under the same names, so they keep the output role's plan (multiplier, lr scaling)."""
    model = copy.deepcopy(model)
    TE.fresh_readout(model, B.d_out)
    with live.sending_to([]):  # a measurement, not the run's training: its points are not the run's
        res = train(model, B, optimizer=p["optimizer"], lr=p["lr"] * p["ft_lr_ratio"], steps=p["ft_steps"],
                    loss="mse", seed=p["seed"])
    if res.diverged:
        return float("nan")
    with torch.no_grad():
        return score(model(B.x_test).double(), B.y_test)[_score_key(B)]


def run_one(cfg: dict, log) -> dict:
    if TE.is_episode_pair(cfg["task"]):
        return TE.run_one(cfg, log, _finetune)
    A, B = tasks(cfg)
    model = mlp(A.d_in, A.d_out, cfg["width"], depth=cfg["depth"], scheme=cfg["scheme"], base_width=cfg["base_width"],
                activation=cfg["activation"], seed=cfg["seed"])
    init = copy.deepcopy(model)
    res = train(model, A, optimizer=cfg["optimizer"], lr=cfg["lr"], steps=cfg["steps"], batch_size=cfg["batch_size"],
                seed=cfg["seed"], log=log, eval_every=max(1, cfg["steps"] // 5))
    out = {"A/test_loss": res.final.get("test/loss", float("nan")), "diverged": int(res.diverged)}
    if res.diverged:
        return out
    out["B/probe_init"], out["B/probe"] = _probe(init, A, B), _probe(model, A, B)
    out["B/probe_gain"] = out["B/probe"] - out["B/probe_init"]
    out["B/finetune_init"], out["B/finetune"] = _finetune(init, B, cfg), _finetune(model, B, cfg)
    out["B/finetune_gain"] = out["B/finetune"] - out["B/finetune_init"]
    return out


def kernel_baselines(p: dict) -> dict[str, float]:
    """NNGP and NTK kernel ridge regression on B (architecture-matched ReLU/erf/linear MLP kernels)."""
    A, B = tasks(p)
    if p["activation"] not in ("relu", "erf", "linear"):
        return {}
    k = MLPKernel(depth=p["depth"], activation=p["activation"], W_std=GAINS[p["activation"]])
    xtr, xte = B.x_train.double().flatten(1), B.x_test.double().flatten(1)
    out = {}
    for name in ("nngp", "ntk"):
        pred, _ = kernel_ridge_loo(getattr(k, name)(xtr), B.targets("train"), getattr(k, name)(xte, xtr))
        out[name] = score(pred, B.y_test)[_score_key(B)]
    return out


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Transfer gain (probe and fine-tune) vs width per scheme, against kernel baselines on B."""
    if TE.is_episode_pair(p["task"]):
        return TE.summarize(results, p, out_dir)
    kern = stored(out_dir, "kernel_baselines", p, lambda: kernel_baselines(p))

    widths, schemes = p["widths"], p["schemes"]

    # scheme -> (n_widths, n_seeds)
    gains, probe, ft_gain, at_init = (by_width(results, schemes, widths, k)
                                      for k in ("B/probe_gain", "B/probe", "B/finetune_gain", "B/probe_init"))
    init_probe = np.nanmean(np.stack(list(at_init.values())), axis=0)
    key = "R^2" if p["task"] == "multi_index" else "accuracy"
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    plot_vs_width({s: (widths, gains[s]) for s in schemes}, None, f"probe gain on B ({key}, trained - init)",
                  "transfer gain of a linear probe", ax=axes[0], logy=False, legend="below")
    axes[0].axhline(0, color="k", lw=0.8)
    plot_vs_width({**{s: (widths, probe[s]) for s in schemes}, "init features": (widths, init_probe)}, None,
                  f"probe {key} on B", "few-shot B: probe vs kernel baselines", ax=axes[1], logy=False,
                  hlines={f"{k.upper()} kernel": v for k, v in kern.items()}, legend="below")
    plot_vs_width({s: (widths, ft_gain[s]) for s in schemes}, None, f"fine-tune gain on B ({key})",
                  "transfer gain of low-LR fine-tuning", ax=axes[2], logy=False, legend="below")
    axes[2].axhline(0, color="k", lw=0.8)
    fig.suptitle(f"transfer, {p['task']}: pretrain on A, few-shot B; gain = {key} of trained - initial features "
                 f"({describe_size(p)})", fontsize=10)
    path = save_figure(fig, out_dir / "transfer_gain_vs_width.png")

    rows, verdicts = [], {}
    for s in schemes:
        g = np.nanmean(gains[s], axis=1)
        per_doubling = slope_per_doubling(widths, g)
        rows.append([s] + [f"{x:+.3f}" for x in g] + [f"{per_doubling:+.3f}", f"{np.nanmean(probe[s][-1]):.3f}"])
        verdicts[s] = {"gain": [float(x) for x in g], "gain_per_doubling": per_doubling,
                       "positive_everywhere": bool(np.all(g > 0)), "probe_at_largest": float(np.nanmean(probe[s][-1]))}
    words = verdict_words(verdicts, widths, kern)
    for s, line in words.items():
        verdicts[s]["words"] = line
    cols = ["scheme"] + [f"gain w={w}" for w in widths] + ["gain change per 2x width", f"probe {key} at w={widths[-1]}"]
    kern_note = ", ".join(f"{k.upper()} kernel {v:.3f}" for k, v in kern.items())
    notes = (f"task {p['task']}: pretrain on A for {p['steps']} {p['optimizer']} steps (lr {p['lr']} at base width "
             f"{p['base_width']}), probe on few-shot B. Baselines on B: {kern_note}; probe on initial features at "
             f"w={widths[-1]}: {np.nanmean(init_probe[-1]):.3f}.\nVerdicts (TP4's predictions, read off the numbers):\n"
             + "\n".join(f"- {line}" for line in words.values()))
    return Summary("Transfer: probe gain on few-shot task B vs width", cols, rows, {"transfer": path},
                   extra={"verdicts": verdicts, "kernel_baselines": kern, "params": p}, notes=notes)



FLAT = 0.02  # |gain change per 2x width| within this counts as "not shrinking" for a feature-learning scheme


def verdict_words(verdicts: dict, widths, kern: dict) -> dict:
    """scheme -> one sentence: its regime (`Scheme.predicted_r`), what TP4 predicts for its gain, the
    numbers, and whether the prediction holds. Feature learning (r = 0): the gain is positive at every
    width and does not shrink (change per 2x width > -FLAT). Kernel regime (r > 0): the gain falls with
    width and ends below every feature-learning scheme's."""
    from ..schemes import get_scheme

    r = {s: get_scheme(s).predicted_r() for s in verdicts}
    fl_end = [v["gain"][-1] for s, v in verdicts.items() if r[s] == 0]
    best_kernel = max(kern.values()) if kern else float("nan")
    out = {}
    for s, v in verdicts.items():
        g, d = v["gain"], v["gain_per_doubling"]
        nums = (f"gain {g[0]:+.3f} at width {widths[0]} -> {g[-1]:+.3f} at {widths[-1]}, {d:+.3f} per 2x width, "
                f"probe {v['probe_at_largest']:.3f} at {widths[-1]}")
        if r[s] == 0:
            holds = v["positive_everywhere"] and d > -FLAT
            beats = f"; beats the best kernel ({best_kernel:.3f})" if v["probe_at_largest"] > best_kernel else \
                f"; does not beat the best kernel ({best_kernel:.3f})"
            out[s] = (f"{s} (feature learning, r = 0): {nums}. Predicted: positive at every width, not shrinking: "
                      + ("HOLDS" if holds else "does NOT hold") + (beats if kern else "") + ".")
        elif r[s] > 0:
            holds = d < 0 and (not fl_end or g[-1] < min(fl_end))
            out[s] = (f"{s} (kernel regime, r = {r[s]:g}): {nums}. Predicted: falls towards 0 with width"
                      + (" and ends below the feature-learning schemes" if fl_end else "") + ": "
                      + ("HOLDS" if holds else "does NOT hold") + ".")
        else:
            out[s] = f"{s} (unstable, r = {r[s]:g}): {nums}. No prediction at a fixed lr."
    return out


class _Transfer(Experiment):
    """The transfer experiment: a real-data pair's own size table (`PAIR_SIZES`) replaces the size's
    defaults when ``task`` names it; explicit overrides still win."""

    def params(self, size: str, overrides) -> dict:
        task = overrides.get("task") or self.sizes.get(size, {}).get("task")
        table = TE.PAIR_SIZES.get(TE.pair_key(task)) if isinstance(task, str) else None
        if table is None or size not in table:
            return super().params(size, overrides)
        merged = dataclasses.replace(self, sizes={**self.sizes, size: {**self.sizes[size], **table[size]}})
        return Experiment.params(merged, size, overrides)

    def options(self) -> dict:
        opts = super().options()
        for table in TE.PAIR_SIZES.values():
            for k, v in table["default"].items():
                if k not in opts and k not in set(self.axes.values()):
                    opts[k] = Option(v, check=self._check(k))
        return opts


EXPERIMENT = _Transfer(NAME, SIZES, run_one, summarize, doc=__doc__, checks={"task": check_transfer_pair, **TE.CHECKS})
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
