"""kernel_limit: when is a finite network its infinite-width kernel?

Train one-hidden-layer ReLU MLPs by full-batch gradient descent on MSE (a multi-index teacher) and
compare their test predictions with the infinite-width NTK prediction of the same run: gradient
flow of the linearized model with the analytic NTK, from the network's own initial outputs
(`measure.kernel_regression.gd_mse_prediction`, neural-tangents' convention). Then do the same with kernel
regression (t = infinity, the "NTK model" of the task) and the NNGP posterior mean (the GP model).

Prediction (Jacot et al. 2018; Lee et al. 2019; TP4 Thm 3.8 / Cor. 3.9):
- NTK-scheme networks approach the kernel prediction as width grows; the distance falls like
  width^-1/2;
- muP networks stay a finite distance away (their kernel moves) and reach a lower test loss on a
  task with low-dimensional structure.

Conventions. paramlab's `ntk` scheme is SP at the base width n0 extrapolated with NTK exponents.
Its tangent kernel equals neural-tangents' 'ntk' kernel (W_std = gain) once each layer's SGD lr
carries the width-free constant gain^2 / fan_in_at_base (`optimizer(..., layer_lr=...)`): the
input layer gain^2 / d, the hidden and readout layers gain^2 / n0. muP gets the same constants, so
at the base width the two runs are identical.

Richness. A muP network keeps the feature-learning strength of its base model at every width, and
an SP network of width 64 with output constant 1 is nearly lazy: with gamma0 = 1 the muP runs sit
only ~0.04 (relative RMS) from the kernel prediction at width 8192, barely apart from NTK (0.036).
So the networks carry Bordelon & Pehlevan's richness constant gamma0 = 4 (output multiplier
1/gamma0, lr * gamma0^2): it leaves the NTK limit unchanged (the lazy limit does not depend on
gamma0) and makes the muP limit visibly rich. `--gamma0 1` reproduces the near-lazy case.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .. import data as D
from ..measure.fit import slope_where_positive
from ..measure.kernel_regression import gd_mse_prediction, kernel_regression
from ..measure.kernels import MLPKernel
from ..models.mlp import mlp
from ..report import plot_vs_width, pyplot, save_figure
from ..train import train
from ..kit import command
from ..kit.experiment import Experiment
from ..kit.summary import Summary, by_width

NAME = "kernel_limit"
_BASE = dict(n_train=256, n_test=512, d=32, k=2, link="tanh_prod", depth=1, gain=math.sqrt(2.0), base_width=64,
             lr=0.5, gamma0=4.0, data_seed=0, dtype="float64")
SIZES = {
    "tiny": {**_BASE, "schemes": ["ntk", "mup"], "widths": [64, 256], "seeds": 1, "steps": 30, "n_train": 64,
             "n_test": 64, "dtype": "float32"},
    "quick": {**_BASE, "schemes": ["ntk", "mup"], "widths": [128, 512, 2048, 8192], "seeds": 2, "steps": 200},
    "default": {**_BASE, "schemes": ["ntk", "sp-stable", "mup", "mf"], "widths": [128, 256, 512, 1024, 2048, 4096, 8192, 16384],
                "seeds": 3, "steps": 400},
}


def _task(p: dict):
    return D.multi_index(p["n_train"], p["n_test"], d=p["d"], k=p["k"], link=p["link"], seed=p["data_seed"])


def layer_lr(p: dict) -> dict[str, float]:
    """Width-free per-layer lr constants that make paramlab's NTK-scheme kernel neural-tangents' NTK."""
    g2 = p["gain"] ** 2
    return {"layers.0.weight": g2 / p["d"], "layers.*.weight": g2 / p["base_width"], "readout.weight": g2 / p["base_width"]}


def run_one(cfg: dict, log) -> dict:
    dtype = getattr(torch, cfg["dtype"])
    task = _task(cfg)
    model = mlp(task.d_in, 1, cfg["width"], depth=cfg["depth"], scheme=cfg["scheme"], base_width=cfg["base_width"],
                activation="relu", bias=False, gain=cfg["gain"], readout_gain=cfg["gain"], seed=cfg["seed"], dtype=dtype,
                output_mult=1.0 / cfg["gamma0"])
    xtr, xte = task.x_train.to(dtype), task.x_test.to(dtype)
    with torch.no_grad():
        f0_tr, f0_te = model(xtr).double(), model(xte).double()
    lr = cfg["lr"] * cfg["gamma0"] ** 2  # BP22: output 1/gamma0, lr * gamma0^2 -> same lazy limit, richer muP
    res = train(model, task, optimizer="sgd", lr=lr, steps=cfg["steps"], layer_lr=layer_lr(cfg), seed=cfg["seed"],
                log=log, eval_every=max(1, cfg["steps"] // 5), dtype=dtype)
    if res.diverged:
        return {"diverged": 1}
    kern = MLPKernel(depth=cfg["depth"], activation="relu", W_std=cfg["gain"])
    xtr64, xte64 = task.x_train.double(), task.x_test.double()
    pred = gd_mse_prediction(kern.ntk(xtr64), task.y_train.double(), kern.ntk(xte64, xtr64), t=cfg["lr"] * cfg["steps"],
                             f0_train=f0_tr, f0_test=f0_te)
    with torch.no_grad():
        f_te = model(xte).double()
    y = task.y_test.double()
    rms = lambda a: float(a.pow(2).mean().sqrt())  # noqa: E731
    return {
        "dist_to_ntk_prediction": rms(f_te - pred.test) / rms(y),  # relative to the target scale
        "test/mse": float((f_te - y).pow(2).mean()),
        "ntk_prediction/test_mse": float((pred.test - y).pow(2).mean()),
        "f0_rms": rms(f0_te),
        "diverged": 0,
    }


def kernel_models(p: dict) -> dict[str, float]:
    """Test MSE of the infinite-width models of the task: NTK and NNGP kernel regression."""
    task = _task(p)
    kern = MLPKernel(depth=p["depth"], activation="relu", W_std=p["gain"])
    xtr, xte, y = task.x_train.double(), task.x_test.double(), task.y_train.double()
    out = {}
    for name in ("ntk", "nngp"):
        k = getattr(kern, name)
        pred = kernel_regression(k(xtr), y, k(xte, xtr))
        out[f"{name} regression"] = float((pred - task.y_test.double()).pow(2).mean())
    return out


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Distance to the NTK prediction and test loss vs width per scheme, against kernel models."""
    widths, schemes = p["widths"], p["schemes"]

    # scheme -> (n_widths, n_seeds)
    dist, mse = (by_width(results, schemes, widths, k) for k in ("dist_to_ntk_prediction", "test/mse"))
    base = kernel_models(p)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plot_vs_width({s: (widths, dist[s]) for s in schemes}, None, "RMS(f_net - f_NTK) / RMS(y)  (test)",
                  "distance to the infinite-width NTK prediction", ax=axes[0])
    plot_vs_width({s: (widths, mse[s]) for s in schemes}, None, "test MSE", "test loss vs kernel models",
                  ax=axes[1], hlines=base)
    path = save_figure(fig, out_dir / "kernel_limit.png")
    rows, verdicts = [], {}
    for s in schemes:
        slope = slope_where_positive(widths, dist[s])
        m = np.nanmean(mse[s], axis=1)
        rows.append([s] + [float(x) for x in np.nanmean(dist[s], axis=1)] + [slope, float(m[-1])])
        verdicts[s] = {"dist_slope": slope, "test_mse_at_largest": float(m[-1])}
    cols = ["scheme"] + [f"dist w={w}" for w in widths] + ["slope", f"test MSE w={widths[-1]}"]
    notes = (f"1-hidden-layer ReLU MLP, full-batch GD (lr {p['lr']}, {p['steps']} steps, NT lr constants), "
             f"multi-index teacher n_train={p['n_train']}. Kernel models: "
             + ", ".join(f"{k} test MSE {v:.3f}" for k, v in base.items()))
    return Summary("Kernel limit: distance to the NTK prediction vs width", cols, rows, {"kernel_limit": path},
                   extra={"verdicts": verdicts, "kernel_models": base, "params": p}, notes=notes)



EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__)
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
