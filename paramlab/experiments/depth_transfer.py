"""depth_transfer: does the best Adam learning rate found at base depth stay best as depth grows?

A pre-LN residual MLP (`pl.mlp(residual=True)`, width = base width, so only depth scales) trains on
mnist1d with Adam at a log2 grid of learning rates, for depths L = L0 .. 8 L0 or more, under three
depth rules (`paramlab.depth`): none, depth-muP (branches x (L/L0)^-1/2, in-block Adam lr x
(L/L0)^-1/2) and CompleteP (branches x (L/L0)^-1, in-block lr x 1). The loss after a fixed budget
(the train loss, as lr_transfer) gives the optimum per depth; at the end of each run the laziness
of every residual block is measured (`paramlab.measure.lazy`: ||G_T - G_lin|| / ||G_T - G_0||, the
share of a block's own change that is not linear in its parameters).

Predictions (Yang et al. TP6, arXiv 2310.02244; Dey et al. CompleteP, arXiv 2505.01618): without a
rule the optimum drifts to smaller lr as depth grows; with either rule it stays within one grid step
(factor 2). CompleteP keeps blocks non-lazy at any depth (laziness flat in L), depth-muP does not
(falls like L^-1/2 after a few steps). Runs at L = L0 are the same network under every rule
(bit-identical, tests/test_depth.py); the summary checks that their losses agree.

Optimum: the robust optimum of `paramlab.measure.optimum` (a parabola in log-loss around the grid
point of least seed-mean loss, bootstrap over seeds), beside the grid argmin; an optimum on the grid
edge is flagged. The transformer does not separate the rules at CPU sizes
(measured: d_model 64, L = 2..16, 300 steps; every optimum within one step, basin flat to
0.01-0.03 nats; see README), so it is not an option here.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from .. import data as D
from ..measure.fit import slope_where_positive
from ..measure.lazy import LazinessProbe
from ..measure.optimum import robust_optimum
from ..models.mlp import mlp
from ..report import pyplot, save_figure
from ..train import train
from ..kit import command
from ..kit.experiment import Experiment
from ..kit.summary import Summary

NAME = "depth_transfer"
RULES = ("none", "depth-mup", "completep")
_BASE = dict(task="mnist1d", width=128, base_depth=2, activation="relu", optimizer="adam", batch_size=128,
             metric="train/loss", probe_size=256, dtype="float32")
SIZES = {
    "tiny": {**_BASE, "task": "digits", "width": 16, "rules": list(RULES), "depths": [2, 4], "seeds": 1, "steps": 5,
             "log2_lrs": [-9, -7], "probe_size": 32},
    "quick": {**_BASE, "rules": list(RULES), "depths": [2, 4, 8, 16], "seeds": 1, "steps": 150,
              "log2_lrs": list(range(-13, -5))},
    # one seed and 7 lrs keep it near 15 min on 2 cores (the cost grows like the sum of the depths); every optimum
    # measured (2 seeds, L = 2..32) lies in -11..-8
    "default": {**_BASE, "rules": list(RULES), "depths": [2, 4, 8, 16, 32], "seeds": 1, "steps": 300,
                "log2_lrs": list(range(-12, -5))},
}


@functools.lru_cache(maxsize=4)
def _task(name: str):
    return D.get_task(name)


def _model(cfg: dict, task):
    rule = None if cfg["rule"] == "none" else cfg["rule"]
    return mlp(task.d_in, task.d_out, cfg["width"], depth=cfg["depth"], residual=True, base_depth=cfg["base_depth"],
               depth_scaling=rule, base_width=cfg["width"], activation=cfg["activation"], seed=cfg["seed"],
               dtype=getattr(torch, cfg["dtype"]))


def run_one(cfg: dict, log) -> dict:
    task = _task(cfg["task"])
    model = _model(cfg, task)
    x_probe = task.x_train[: cfg["probe_size"]].reshape(min(cfg["probe_size"], task.n_train), -1)
    x_probe = x_probe.to(next(model.parameters()).dtype)
    probe = LazinessProbe(model, x_probe)  # every block's input and parameters at init
    res = train(model, task, optimizer=cfg["optimizer"], lr=2.0 ** cfg["log2_lr"], steps=cfg["steps"],
                batch_size=cfg["batch_size"], seed=cfg["seed"], log=log, eval_every=max(1, cfg["steps"] // 4))
    final = res.final
    lazy = {"nonlin": math.nan, "ref": math.nan} if res.diverged else probe.measure()
    return {"train/loss": final.get("train/loss", math.nan), "test/loss": final.get("test/loss", math.nan),
            "test/acc": final.get("test/acc", math.nan), "laziness": lazy["nonlin"], "laziness_ref": lazy["ref"],
            "diverged": int(res.diverged)}


def optimum(log2_lrs, curves) -> tuple[float, float, bool, float]:
    """(grid argmin, robust optimum, on_edge, its std) of loss curves (n_seeds, n_lrs) or one curve; inf = diverged.

    The robust optimum is `paramlab.measure.optimum.robust_optimum` (a parabola in log-loss around the
    seed-mean minimum, bootstrap over seeds), the same rule as lr_transfer and lm_lr_transfer. nan if every
    run diverged; at an edge the optimum is the grid point (a bound).
    """
    o = robust_optimum(log2_lrs, np.atleast_2d(np.asarray(curves, dtype=float)))
    if o.status == "none":
        return math.nan, math.nan, False, math.nan
    return float(o.argmin), float(o.x), o.status == "edge", float(o.se)


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Loss vs lr per depth and rule; optimum per depth, shift and spread; laziness vs depth."""
    lrs, depths, metric = np.array(p["log2_lrs"], dtype=float), p["depths"], p["metric"]

    def pick(rule, L, lr, key):
        v = [r[key] if not r.get("diverged") else (np.inf if key == metric else np.nan) for c, r in results
             if c["rule"] == rule and c["depth"] == L and c["log2_lr"] == lr]
        return float(np.mean(v)) if v else np.nan

    def seed_curves(rule, L):  # (n_seeds, n_lrs) of the metric, inf where a run diverged
        by_seed = {}
        for c, r in results:
            if c["rule"] == rule and c["depth"] == L:
                by_seed.setdefault(c["seed"], {})[c["log2_lr"]] = np.inf if r.get("diverged") else r[metric]
        return np.array([[row.get(lr, np.nan) for lr in p["log2_lrs"]] for row in by_seed.values()])

    plt = pyplot()
    n = len(p["rules"])
    fig, axes = plt.subplots(1, n + 1, figsize=(4.6 * (n + 1), 3.8))
    cmap = plt.get_cmap("viridis")
    rows, verdicts, lazy_best, lazy_l0 = [], {}, {}, {}
    for ax, rule in zip(axes, p["rules"]):
        grid, fine, edges, best_loss, lz_b, lz_0 = [], [], [], [], [], []
        l0_best = None
        for i, L in enumerate(depths):
            c = np.array([pick(rule, L, lr, metric) for lr in p["log2_lrs"]])
            g, f, edge, _ = optimum(lrs, seed_curves(rule, L))
            grid.append(g), fine.append(f), edges.append(edge)
            j = int(np.argmin(np.where(np.isfinite(c), c, np.inf)))
            best_loss.append(float(c[j]))
            l0_best = g if l0_best is None else l0_best
            lz_b.append(pick(rule, L, g, "laziness") if np.isfinite(g) else np.nan)
            lz_0.append(pick(rule, L, l0_best, "laziness"))
            color = cmap(i / max(1, len(depths) - 1))
            ax.plot(lrs, np.where(np.isfinite(c), c, np.nan), "o-", ms=3, color=color, label=f"L = {L}")
            if np.isfinite(g):
                ax.plot([g], [c[j]], "*", ms=12, color=color)
        shift, spread = grid[-1] - grid[0], float(np.nanmax(grid) - np.nanmin(grid))
        fshift = fine[-1] - fine[0]
        ax.set_title(f"{rule}: optimum log2 lr {grid[0]:g} -> {grid[-1]:g}")
        ax.set_xlabel("log2 base learning rate")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        lz_slope = slope_where_positive(depths, np.array(lz_b))
        lz0_slope = slope_where_positive(depths, np.array(lz_0))
        rows.append([rule] + grid + [shift, round(fshift, 2), spread, any(edges), best_loss[0], best_loss[-1],
                                      lz_b[0], lz_b[-1], round(lz0_slope, 2)])
        verdicts[rule] = {"optima": grid, "refined": fine, "shift_steps": shift, "refined_shift": fshift,
                          "spread_steps": spread, "edge": edges, "best_loss": best_loss, "laziness_at_best": lz_b,
                          "laziness_at_L0_best": lz_0, "laziness_slope_at_best": lz_slope,
                          "laziness_slope_at_L0_best": lz0_slope}
        lazy_best[rule], lazy_l0[rule] = lz_b, lz_0
    axes[0].set_ylabel(f"{metric} after {p['steps']} steps")
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    for rule, color in zip(p["rules"], ("tab:blue", "tab:orange", "tab:green")):
        ax.plot(depths, lazy_l0[rule], "o-", color=color,
                label=f"{rule} ({verdicts[rule]['laziness_slope_at_L0_best']:+.2f})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth L (residual blocks)")
    ax.set_title("laziness at L0's best lr (legend: slope)")
    ax.set_ylabel("||G_T - G_lin|| / ||G_T - G_0||")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, out_dir / "depth_transfer.png")
    # runs at L0 are one network under every rule: their losses must agree
    l0 = {rule: [pick(rule, depths[0], lr, metric) for lr in p["log2_lrs"]] for rule in p["rules"]}
    same = depths[0] == p["base_depth"] and all(np.allclose(l0[r], l0[p["rules"][0]], rtol=1e-6, equal_nan=True)
                                                 for r in p["rules"])
    cols = (["rule"] + [f"best log2 lr L={L}" for L in depths]
            + ["shift (grid steps)", "refined shift", "spread", "edge", f"loss* L={depths[0]}", f"loss* L={depths[-1]}",
               f"laziness* L={depths[0]}", f"laziness* L={depths[-1]}", "laziness slope (L0's lr)"])
    notes = (f"task {p['task']}, residual MLP width {p['width']}, base depth {p['base_depth']}, {p['optimizer']}, "
             f"{p['steps']} steps, batch {p['batch_size']}, {p['seeds']} seed(s); grid step = factor 2 in lr; optimum = "
             "grid argmin of the seed-mean loss; refined = robust optimum (parabola in log-loss, paramlab.measure.optimum). Prediction: none drifts (|shift| >= 2), "
             "depth-mup and completep spread <= 1; laziness flat for completep, falling for depth-mup. "
             f"L0 runs identical across rules: {same}.")
    return Summary("Depth transfer: best learning rate per depth and rule", cols, rows, {"depth_transfer": path},
                   extra={"verdicts": verdicts, "l0_identical": bool(same), "params": p}, notes=notes)


def _check_rule(v) -> str | None:
    return None if v in RULES else f"is not a depth rule: {list(RULES)}"


def _check_depth(v) -> str | None:
    return None if isinstance(v, int) and v > 0 else "must be a positive int (residual blocks)"


EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__,
                        checks={"rule": _check_rule, "depth": _check_depth, "base_depth": _check_depth},
                        axes={"rule": "rules", "depth": "depths", "log2_lr": "log2_lrs", "seed": "seeds"})
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
