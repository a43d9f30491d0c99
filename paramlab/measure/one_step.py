"""One optimizer step on one example, measured across widths: the cleanest test of a scheme's
width exponents (docs/theory.md §3.3: batch 1, one step, linear response), as the relative change of
the hidden features and the output update. tests/test_one_step.py checks its slopes; for any model,
`coord_check(..., steps=1)` measures the same step per module (tests/test_coord.py)."""

from __future__ import annotations

import torch

from ..engine.step import train_step
from ..engine.update import TorchUpdate
from .fit import fit_slope
from ..models.mlp import mlp
from ..optim import optimizer as make_optimizer


def one_step_response(scheme, width: int, *, base_width: int = 64, seed: int = 0, lr: float = 1e-3,
                      optimizer: str = "sgd", d_in: int = 16, depth: int = 2, activation: str = "tanh",
                      dtype=torch.float64) -> dict[str, float]:
    """Train an MLP for one step on one example (MSE to target 1) and measure what moved.

    Returns relative changes of every layer's preactivation `R/<layer>` = ||h_1 - h_0|| / ||h_0||
    (R/hidden is the last hidden layer), the output change `df` = |f_1 - f_0| and `f0` = |f_0|.
    """
    g = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(1, d_in, generator=g, dtype=dtype)
    y = torch.ones(1, 1, dtype=dtype)
    model = mlp(d_in, 1, width, depth=depth, scheme=scheme, base_width=base_width, activation=activation,
                seed=seed, dtype=dtype)
    names = [f"layers.{i}" for i in range(depth)]
    mods = dict(model.named_modules())
    before: dict[str, torch.Tensor] = {}

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        acts = {}
        hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o.detach())) for n in names]
        out = model(x)
        for h in hooks:
            h.remove()
        return out, acts

    opt = make_optimizer(model, optimizer, lr=lr)
    f0, before = run()
    train_step(TorchUpdate(opt), 0.5 * ((f0 - y) ** 2).sum())
    with torch.no_grad():
        f1, after = run()
    res = {f"R/{n}": float((after[n] - before[n]).norm() / before[n].norm()) for n in names}
    res["R/input"], res["R/hidden"] = res[f"R/{names[0]}"], res[f"R/{names[-1]}"]
    res["df"] = float((f1 - f0.detach()).abs().max())
    res["f0"] = float(f0.detach().abs().max())
    return res


def width_sweep(schemes, widths, seeds: int = 4, quantities=("R/hidden", "df"), **kwargs):
    """one_step_response over schemes x widths x seeds 0..seeds-1.

    Returns {scheme: {"values": {q: [[per seed] per width]}, "slopes": {q: slope}}}.
    """
    out = {}
    for s in schemes:
        vals = {q: [] for q in quantities}
        for w in widths:
            rs = [one_step_response(s, w, seed=sd, **kwargs) for sd in range(seeds)]
            for q in quantities:
                vals[q].append([r[q] for r in rs])
        out[getattr(s, "name", s)] = {"values": vals, "slopes": {q: fit_slope(widths, vals[q])[0] for q in quantities}}
    return out
