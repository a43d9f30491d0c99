"""The main job's demo: one SGD step on one example, across widths, per scheme.

Shows the seed claim in a minute: under muP/MF the hidden features move the same amount at every
width (feature learning); under NTK and SP-with-stable-LR they move like width^-1/2 (kernel
regime: frozen in the limit); under SP at a fixed LR the output update blows up with width.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .measure.coord import coord_check
from .measure.fit import fit_slope
from .models.mlp import mlp
from .report import markdown_table, plot_vs_width, pyplot, save_figure
from .schemes import get_scheme

SCHEMES = ("sp", "sp-stable", "ntk", "mf", "mup")
# Predicted exponents of the last hidden layer's relative change (THEORY.md §3.3): -r (TP4 Def. 3.2).
PREDICTED = {s: -get_scheme(s).predicted_r() for s in SCHEMES}
HIDDEN, OUTPUT = "layers.1", "readout"  # the last hidden layer's preactivation and the output, tanh MLP of depth 2


def one_step(scheme: str, widths, seeds: int, lr: float, d_in: int = 16) -> dict:
    """One SGD step on one example (MSE to target 1, float64) at every width, measured by `coord_check`.

    Returns {"values": {q: [[per seed] per width]}, "slopes": {q: slope}} for q = "R/hidden", the
    relative change of the last hidden preactivation ||h_1 - h_0|| / ||h_0||, and q = "df" = |f_1 - f_0|.
    """
    x = torch.randn(1, d_in, generator=torch.Generator().manual_seed(10_000), dtype=torch.float64)
    y = torch.ones(1, 1, dtype=torch.float64)
    res = coord_check(lambda w: mlp(d_in, 1, w, depth=2, scheme=scheme, base_width=64, activation="tanh",
                                    dtype=torch.float64),
                      widths, x, y, optimizer="sgd", lr=lr, steps=1, seeds=seeds, modules=[HIDDEN, OUTPUT],
                      quantities=("act/rms", "dact/rms"), auto_predict=False)
    vals = {"R/hidden": res.values(HIDDEN, "dact/rms", 1) / res.values(HIDDEN, "act/rms", 0),
            "df": res.values(OUTPUT, "dact/rms", 1)}
    return {"values": {q: v.tolist() for q, v in vals.items()},
            "slopes": {q: fit_slope(widths, v.tolist())[0] for q, v in vals.items()}}


def run_demo(out: str | Path = "outputs/demo", widths=(128, 256, 512, 1024, 2048), seeds=3, lr=1e-3) -> dict:
    torch.set_num_threads(1)
    t0 = time.time()
    res = {s: one_step(s, list(widths), seeds, lr) for s in SCHEMES}
    out = Path(out)
    fig = out / "one_step_features_vs_width.png"
    plt = pyplot()
    f, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
    plot_vs_width({s: (widths, res[s]["values"]["R/hidden"]) for s in SCHEMES}, None,
                  "||h1 - h0|| / ||h0||  (last hidden layer)", "feature movement after 1 SGD step", ax=axes[0])
    plot_vs_width({s: (widths, res[s]["values"]["df"]) for s in SCHEMES}, None,
                  "|f1 - f0|", "output change after 1 SGD step", ax=axes[1])
    save_figure(f, fig)
    rows = [(s, res[s]["slopes"]["R/hidden"], PREDICTED[s] if PREDICTED[s] <= 0 else "> 0 (unstable)",
             res[s]["slopes"]["df"]) for s in SCHEMES]
    table = markdown_table(["scheme", "slope of feature change", "predicted (-r)", "slope of output change"], rows)
    print(f"One SGD step (lr={lr}, batch 1, tanh MLP, base width 64), widths {list(widths)}, {seeds} seeds:")
    print(table)
    print("muP/MF: features move at every width (slope ~0). NTK, SP with stable LR: slope ~-1/2, features")
    print("freeze as width grows (kernel regime). SP at fixed LR: the output update grows with width.")
    print(f"plot: {fig}   ({time.time() - t0:.0f} s)")
    return {"results": res, "plot": str(fig), "table": table}
