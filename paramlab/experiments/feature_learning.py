"""feature_learning: which schemes move the features, and how does that scale with width?

Train the same MLP under every scheme for a fixed budget of SGD steps at a fixed base LR on a
multi-index teacher y = g(U x), then measure on a fixed probe batch:
- how far each hidden layer's features moved (||h_T - h_0|| / ||h_0||);
- how far the feature kernel moved (||F_T - F_0||_F / ||F_0||_F) and CKA(h_0, h_T);
- how far the empirical NTK moved (relative Frobenius change; `measure.ntk`);
- weight movement relative to init (spectral and Frobenius), and the share of the first layer's
  change that lies in span(U).

Fit the width exponent of each quantity and compare it with TP4's prediction: features move like
width^-r, with r = 1/2 for NTK and SP-with-stable-LR (kernel regime) and r = 0 for muP and MF
(feature learning); the kernel-regime kernels move at least as fast to 0 (THEORY.md §3.3).

The base LR (0.5 at base width 64) is large on purpose, as in a coordinate check: muP's kernel
movement has a deterministic part that grows with lr*steps and a finite-width fluctuation part that
falls like width^-1/2. At lr 0.05 for 50 steps the fluctuation part dominates up to width 1024 and
muP's feature-kernel change still falls (slope -0.48), although its feature movement is flat.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .. import data as D
from ..measure.capture import features
from ..measure.features import kernel_change, linear_cka, rel_change
from ..measure.weights import subspace_fraction, weight_change
from ..measure.fit import slope_where_positive
from ..measure.ntk import ntk_change
from ..models.mlp import mlp
from ..report import plot_vs_width, pyplot, save_figure
from ..schemes import get_scheme
from ..train import train
from ..kit import command
from ..kit.experiment import Experiment
from ..kit.summary import Summary, by_width

NAME = "feature_learning"
_BASE = dict(n_train=1024, d=32, k=2, link="tanh_prod", depth=2, activation="tanh", base_width=64, optimizer="sgd",
             lr=0.5, batch_size=64, probe=128, ntk_probe=32, data_seed=0)
SIZES = {
    "tiny": {**_BASE, "schemes": ["ntk", "mup"], "widths": [64, 256], "seeds": 1, "steps": 10, "base_width": 32,
             "n_train": 256, "probe": 32, "ntk_probe": 8},
    "quick": {**_BASE, "schemes": ["sp-stable", "ntk", "mf", "mup"], "widths": [128, 256, 512, 1024], "seeds": 2,
              "steps": 100},
    "default": {**_BASE, "schemes": ["sp-stable", "ntk", "mf", "mup"], "widths": [128, 256, 512, 1024, 2048, 4096],
                "seeds": 3, "steps": 100},
}
QUANTITIES = {  # summary key -> (label, predicted exponent as a function of the scheme's r)
    "feat/last/rel_change": ("feature movement (last hidden layer)", lambda r: -r),
    "feat/last/kernel_change": ("feature-kernel change", None),
    "ntk/rel_change": ("empirical NTK change", None),
    "feat/last/one_minus_cka": ("1 - CKA(h_0, h_T)", None),
}


def _task(p: dict):
    return D.multi_index(p["n_train"], max(p["probe"], 256), d=p["d"], k=p["k"], link=p["link"], seed=p["data_seed"])


def run_one(cfg: dict, log) -> dict:
    task = _task(cfg)
    model = mlp(task.d_in, task.d_out, cfg["width"], depth=cfg["depth"], scheme=cfg["scheme"],
                base_width=cfg["base_width"], activation=cfg["activation"], seed=cfg["seed"])
    init = copy.deepcopy(model)
    xp, _ = task.probe(cfg["probe"])
    names = [f"layers.{i}" for i in range(cfg["depth"])]
    res = train(model, task, optimizer=cfg["optimizer"], lr=cfg["lr"], steps=cfg["steps"], batch_size=cfg["batch_size"],
                seed=cfg["seed"], log=log, eval_every=max(1, cfg["steps"] // 5))
    out = {"train/loss": res.final.get("train/loss", float("nan")), "diverged": int(res.diverged)}
    if res.diverged:
        return out
    f0, ft = features(init, xp, names), features(model, xp, names)
    for i, n in enumerate(names):
        tag = "last" if i == len(names) - 1 else n
        out[f"feat/{tag}/rel_change"] = rel_change(ft[n], f0[n])  # preactivations of layer n
        out[f"feat/{tag}/kernel_change"] = kernel_change(torch.tanh(f0[n]) if cfg["activation"] == "tanh" else f0[n],
                                                         torch.tanh(ft[n]) if cfg["activation"] == "tanh" else ft[n])
        out[f"feat/{tag}/one_minus_cka"] = max(1e-12, 1 - linear_cka(f0[n], ft[n]))
    out["ntk/rel_change"] = ntk_change(init, model, xp[: cfg["ntk_probe"]], mode="trace", weights="lr",
                                       optimizer=cfg["optimizer"])
    p0, pt = dict(init.named_parameters()), dict(model.named_parameters())
    for n in p0:
        if p0[n].dim() == 2:
            wc = weight_change(p0[n], pt[n])
            out[f"weights/{n}/rel_fro"], out[f"weights/{n}/rel_spec"] = wc["fro"], wc["spec"]
    out["weights/layers.0/in_span_U"] = subspace_fraction(pt["layers.0.weight"] - p0["layers.0.weight"], task.meta["U"])
    return out


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Width exponents of feature movement, feature-kernel, NTK and CKA change per scheme."""
    widths, schemes = p["widths"], p["schemes"]

    plt = pyplot()
    fig, axes = plt.subplots(1, len(QUANTITIES), figsize=(5 * len(QUANTITIES), 3.9))
    slopes = {}
    for ax, (key, (label, _)) in zip(axes, QUANTITIES.items()):
        t = by_width(results, schemes, widths, key)
        plot_vs_width({s: (widths, t[s]) for s in schemes}, None, label, label, ax=ax)
        for s in schemes:
            slopes.setdefault(s, {})[key] = slope_where_positive(widths, t[s])
    path = save_figure(fig, out_dir / "feature_movement_vs_width.png")
    rows, verdicts = [], {}
    for s in schemes:
        pred = -get_scheme(s).predicted_r()
        row = [s, pred] + [slopes[s][k] for k in QUANTITIES]
        rows.append(row)
        verdicts[s] = {"predicted_feature_exponent": pred, **{f"slope:{k}": slopes[s][k] for k in QUANTITIES}}
    cols = ["scheme", "predicted exponent (-r)"] + [f"slope: {QUANTITIES[k][0]}" for k in QUANTITIES]
    notes = (f"{p['depth']}-hidden-layer {p['activation']} MLP, {p['steps']} {p['optimizer']} steps at base lr {p['lr']} "
             f"(base width {p['base_width']}), batch {p['batch_size']}, multi-index teacher d={p['d']}, k={p['k']}; "
             f"{p['seeds']} seed(s). Slopes are log2-log2 fits over widths {widths}.")
    return Summary("Feature learning: width exponents of feature and kernel movement", cols, rows,
                   {"feature_movement": path}, extra={"verdicts": verdicts, "params": p}, notes=notes)



EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__)
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
