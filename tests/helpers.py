"""Small shared helpers for the tests."""

import math

import numpy as np
import torch

from paramlab.measure.coord import coord_check
from paramlab.measure.fit import fit_slope


def train(model, opt, x, y, steps=3):
    """`steps` full-batch steps of MSE; returns the model's outputs on x after each step, stacked."""
    outs = []
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).sum(-1).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            outs.append(model(x).clone())
    return torch.stack(outs)


def rel(a, b):
    """Relative difference ||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())


def max_ratio(v):
    """Largest factor by which a width's value departs from the base width's (row 0), over widths and steps."""
    base = v[0]
    zero = base == 0
    if np.any(v[:, zero] != 0):
        return math.inf
    r = v[:, ~zero] / base[~zero]
    return float(np.max(np.maximum(r, 1 / r)))


def slopes(widths, v):
    """Log-log slope against width of each step's column of v (n_widths, n_steps), where all positive."""
    return [fit_slope(widths, v[:, t])[0] for t in range(v.shape[1]) if np.all(v[:, t] > 0)]


def activation_sizes(make_model, widths, x, y, optimizer, lr, loss, steps=3):
    """name -> (n_widths, steps + 1) RMS of every named module's output at steps 0..steps (one seed,
    the same batch each step), measured by `paramlab.coord_check`: the modules a forward calls, leaves
    and containers (a container's output is the residual stream or a block's output)."""
    names = [n for n, _ in make_model(widths[0]).named_modules() if n]
    res = coord_check(make_model, widths, x, y, optimizer=optimizer, lr=lr, loss=loss, steps=steps, seeds=1,
                      modules=names, quantities=("act/rms",), auto_predict=False)
    return {n: np.stack([res.values(n, "act/rms", t)[:, 0] for t in range(steps + 1)], 1) for n in res.order}
