"""lm_feature_learning: does a Transformer LM learn features at every width, or freeze into its kernel?

`feature_learning`'s measures applied per block of `paramlab.transformer` on tiny Shakespeare (char).
Every scheme trains the same model (depth 2, 4 heads, context 32, batch 16; the protocol of
`lm_lr_transfer`) with Adam at ONE base learning rate (2^-6, the base-width optimum of lm_lr_transfer)
for a fixed number of steps. On fixed held-out windows (N windows x T tokens = N*T positions) it records,
at init (h_0) and after training (h_T), per block output:

    tok_emb    the token embedding's output
    blocks.i   the residual stream after block i
    feature movement   ||h_T - h_0||_F / ||h_0||_F                    (measure.features.rel_change)
    kernel movement    ||F_T - F_0||_F / ||F_0||_F,  F = H H^T / d      (measure.features.kernel_change)
    1 - CKA(h_0, h_T)  and the change of the cosine kernel of unit-norm rows: scale-free companions
                       (the residual stream's norm grows in training and inflates both plain measures)

and fits the width exponent of each (log2-log2 least squares over widths, seeds in log space:
measure.fit.fit_slope). Prediction (TP4 Def. 3.2 with THEORY.md's Adam rows; `Scheme.predicted_r`):
NTK features move like width^-1/2 (kernel regime) and its kernels fall at least as fast; muP features
move like width^0 (feature learning). At CPU widths (<= 512) the measured NTK slope is still
steepening towards -1/2 from a small base width and muP's still flattening towards 0.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ..measure.capture import features
from ..measure.features import kernel_change, linear_cka, rel_change
from ..measure.fit import fit_slope
from ..report import pyplot, save_figure
from ..schemes import get_scheme
from ..kit import command
from ..kit.experiment import Experiment
from ..kit.lm import OnDevice, check_task, lm_model, lm_task, protocol
from .lm_train import train_lm
from ..kit.summary import Summary, by_width

NAME = "lm_feature_learning"
_BASE = dict(task="shakespeare_char", depth=2, n_heads=4, base_width=32, context=32, batch=16, n_eval=128,
             eval_seed=0, probe=32, probe_seed=1, betas=[0.9, 0.999], eps=1e-8, dtype="float32", device="cpu",
             log2_lr=-6.0, steps=100)
SIZES = {
    "tiny": {**_BASE, "schemes": ["ntk", "mup"], "widths": [32, 64], "seeds": 1, "steps": 5, "probe": 4, "n_eval": 8},
    "quick": {**_BASE, "schemes": ["ntk", "mup"], "widths": [32, 64, 128, 256], "seeds": 1},
    "default": {**_BASE, "schemes": ["ntk", "mup"], "widths": [32, 64, 128, 256, 512], "seeds": 3},
    "gpu": {**_BASE, "schemes": ["ntk", "mup"], "widths": [32, 64, 128, 256, 512, 1024, 2048], "seeds": 3,
            "device": "cuda"},
}
MEASURES = {"feat": "feature movement", "kernel": "kernel movement", "one_minus_cka": "1 - CKA",
            "cos_kernel": "cosine-kernel change"}


def _blocks(depth: int) -> list[str]:
    return ["tok_emb"] + [f"blocks.{i}" for i in range(depth)]


def run_one(cfg: dict, log) -> dict:
    task = lm_task(cfg["task"])
    model = lm_model(cfg, task)
    init = copy.deepcopy(model)
    res = train_lm(model, OnDevice(task, cfg["device"]), lr=2.0 ** cfg["log2_lr"], seed=cfg["seed"], log=log,
                   **protocol(cfg))
    out = {"val/loss": res.val_loss, "diverged": int(res.diverged)}
    if res.diverged:
        return out
    x, _ = task.eval_windows(cfg["probe"], cfg["context"], seed=cfg["probe_seed"])
    names = _blocks(cfg["depth"])
    x = x.to(cfg["device"])
    f0, ft = features(init, x, names), features(model, x, names)
    for n in names:
        a, b = f0[n].flatten(0, 1).double(), ft[n].flatten(0, 1).double()  # (N*T, d): one row per position
        out[f"{n}/feat"] = rel_change(b, a)
        out[f"{n}/kernel"] = kernel_change(a, b)
        out[f"{n}/one_minus_cka"] = max(1e-12, 1.0 - linear_cka(a, b))
        na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
        out[f"{n}/cos_kernel"] = kernel_change(na, nb)
    return out


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Per scheme, block and measure: geometric mean over seeds per width and the fitted width exponent."""
    widths, schemes, names = p["widths"], p["schemes"], _blocks(p["depth"])
    rows, slopes = [], {}
    for s in schemes:
        pred = -get_scheme(s).predicted_r()
        for n in names:
            for m in MEASURES:
                t = by_width(results, [s], widths, f"{n}/{m}")[s]  # (n_widths, n_seeds)
                slope = fit_slope(widths, t)[0] if np.all(np.isfinite(t)) and np.all(t > 0) else float("nan")
                slopes.setdefault(s, {})[f"{n}/{m}"] = slope
                gm = np.exp(np.log(t).mean(1))
                rows.append([s, n, MEASURES[m], pred if m == "feat" else None] + [float(f"{v:.3g}") for v in gm]
                            + [round(slope, 2)])
        vl = by_width(results, [s], widths, "val/loss")[s].mean(1)
        rows.append([s, "", "val loss", None] + [round(float(v), 3) for v in vl] + [None])  # None: wandb tables type columns
    verdicts = {s: {"predicted_feature_exponent": -get_scheme(s).predicted_r(), **slopes[s]} for s in schemes}
    if {"ntk", "mup"} <= set(schemes):  # the regimes separate: NTK's features freeze faster than muP's, per block
        verdicts["ntk_steeper_than_mup"] = {n: bool(slopes["ntk"][f"{n}/feat"] < slopes["mup"][f"{n}/feat"] - 0.25)
                                            for n in names}
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for ax, m in zip(axes, ("feat", "cos_kernel")):
        for s, style in zip(schemes, ("o-", "s--", "^-.", "d:")):
            for n in names:
                t = by_width(results, [s], widths, f"{n}/{m}")[s]
                ax.plot(widths, np.exp(np.log(t).mean(1)), style, ms=4, label=f"{s} {n}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("d_model")
        ax.set_title(MEASURES[m], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    path = save_figure(fig, Path(out_dir) / "lm_feature_movement_vs_width.png")
    cols = ["scheme", "block", "measure", "predicted exponent"] + [f"w={w}" for w in widths] + ["fitted exponent"]
    notes = (f"Transformer LM on tiny Shakespeare, depth {p['depth']}, {p['n_heads']} heads, {p['steps']} Adam steps at "
             f"base lr 2^{p['log2_lr']:g} (base width {p['base_width']}), batch {p['batch']} x {p['context']} tokens, "
             f"{p['seeds']} seed(s); measured on {p['probe']} held-out windows ({p['probe'] * p['context']} positions). "
             "Values: geometric mean over seeds; exponent: log2-log2 fit over all widths. Predicted feature "
             f"exponent: -r (NTK -1/2, muP 0). NTK steeper than muP by > 0.25 per block: "
             f"{verdicts.get('ntk_steeper_than_mup')}.")
    return Summary("Feature learning in a Transformer LM: width exponents per block", cols, rows,
                   {"lm_feature_movement": path}, extra={"verdicts": verdicts, "params": p}, notes=notes)


EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__, checks={"task": check_task})
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
