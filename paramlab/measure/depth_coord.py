"""Depth coordinate check: residual-stream and per-block sizes vs depth L after a few optimizer steps.

The width coordinate check (`coord`) asks whether coordinates keep their size as width grows; this
one asks it of depth. For each depth L, build the model (`make(L, seed)`: same width, a depth rule
with base depth L0), train `steps` steps on one fixed batch and record at t = 0 and t = steps:

    stream0   RMS of the residual stream after the last block (what enters the final norm / pool), at init
    dstream   RMS of its change h_T - h_0;          rel = ||h_T - h_0|| / ||h_0||
    branch0   RMS of each branch output after its depth multiplier, at init (mean over branches)
    dbranch   RMS of that output's change (mean over branches)
    dW        ||W_T - W_0||_F / ||W_0||_F of in-block hidden weights (mean over tensors)
    dout      RMS of the change of the network output

and fits log-log slopes against L (geometric mean over seeds). Predicted slopes, Adam, from the
rule's alpha (derivation: the stream at init is ~ e + 2 L v m_L^-2alpha; it moves by L m_L^-alpha
times a block's own change, which is m_L^(alpha-1) under the rule's lr):

    quantity   no rule        alpha in [1/2, 1]                         kind
    stream0    +1/2           0 at alpha = 1/2; <= 0 above (embedding floor)   bound above 1/2
    dstream    >= +1          0
    rel        >= +1/2        0
    branch0    0              -alpha
    dbranch    >= 0           -alpha at alpha = 1; in [-1, -1/2] at alpha = 1/2 (input-driven + own part)
    dW         0              alpha - 1
    dout       -              0

A row passes when its slope lies in [lo - tol, hi + tol] (`coord_result.agrees`, tol 0.15 as the
width check); `paramlab.report.plot_depth_coord` draws the results. SGD has no table here (rows are
measured, verdicts None). Measured against these predictions (3 seeds, Adam lr 1e-2, 3 steps):
transformer d_model 64, L = 2..32: rel slope +0.70 (none), +0.05 (depth-muP), -0.02 (CompleteP);
residual MLP width 128, L = 2..64: +0.62 / +0.01 / +0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .coord_result import agrees
from .fit import fit_slope

__all__ = ["DepthCoordResult", "depth_coord_check", "predicted_depth_slopes"]

QUANTITIES = ("stream0", "dstream", "rel", "branch0", "dbranch", "dW", "dout")
INF = math.inf


def predicted_depth_slopes(alpha: float, family: str = "adam") -> dict[str, tuple[float, float] | None]:
    """quantity -> (lo, hi) predicted log-log slope vs depth for branch exponent alpha (0: no rule)."""
    if family != "adam":
        return {q: None for q in QUANTITIES}
    if alpha == 0:
        return {"stream0": (0.5, 0.5), "dstream": (1.0, INF), "rel": (0.5, INF), "branch0": (0.0, 0.0),
                "dbranch": (0.0, INF), "dW": (0.0, 0.0), "dout": None}
    return {"stream0": (0.0, 0.0) if alpha == 0.5 else (-INF, 0.0), "dstream": (0.0, 0.0), "rel": (0.0, 0.0),
            "branch0": (-alpha, -alpha), "dbranch": (-alpha, -alpha) if alpha == 1 else (-1.0, -0.5),
            "dW": (alpha - 1, alpha - 1), "dout": (0.0, 0.0)}


def _rms(t: torch.Tensor) -> float:
    return t.double().pow(2).mean().sqrt().item()


@dataclass
class DepthCoordResult:
    """Per-depth values (geometric mean over seeds), slopes, predictions and verdicts of one rule."""

    rule: str
    depths: list
    values: dict  # quantity -> (n_depths, n_seeds) array
    rows: list = field(default_factory=list)  # one dict per quantity: slope, lo, hi, passed

    @property
    def passed(self) -> bool:
        return all(r["passed"] is not False for r in self.rows)

    def slope(self, q: str) -> float:
        return next(r["slope"] for r in self.rows if r["quantity"] == q)

    def table(self) -> str:
        head = "| rule | quantity | " + " | ".join(f"L={L}" for L in self.depths) + " | slope | predicted | verdict |"
        lines = [head, "|" + "---|" * (len(self.depths) + 5)]
        for r in self.rows:
            gm = np.exp(np.log(self.values[r["quantity"]]).mean(1))
            pred = "-" if r["lo"] is None else (f"{r['lo']:+.2g}" if r["lo"] == r["hi"] else f"[{r['lo']:+.2g}, {r['hi']:+.2g}]")
            verdict = "-" if r["passed"] is None else ("ok" if r["passed"] else "MISS")
            lines.append(f"| {self.rule} | {r['quantity']} | " + " | ".join(f"{v:.3g}" for v in gm)
                         + f" | {r['slope']:+.2f} | {pred} | {verdict} |")
        return "\n".join(lines)


def measure_once(model: nn.Module, x, loss_fn: Callable, steps: int, lr: float, optimizer: str = "adam") -> dict:
    """One model: `steps` steps of paramlab's optimizer on the batch (x, y=loss_fn's), the quantities above."""
    from ..optim import optimizer as make_optimizer
    from ..parameterize import get_plan

    plan = get_plan(model)
    dplan = plan.depth
    if dplan is None:
        raise ValueError("the depth coordinate check needs the model's residual blocks: build it with base_depth= "
                         "(and any depth_scaling, None included) or parameterize(..., branches=...)")
    mods = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}

    def grab(key):
        def hook(mod, args, out):
            store[key] = out.detach().clone()
        return hook

    # registered after the BranchScale hooks: they see the multiplied branch outputs
    handles = [mods[dplan.blocks[-1]].register_forward_hook(grab("stream"))]
    handles += [mods[n].register_forward_hook(grab(n)) for n in dplan.branches]
    try:
        def snapshot():
            with torch.no_grad():
                out = model(x)
            return {**store, "out": out.detach().clone()}

        params = dict(model.named_parameters())
        hidden = [t.name for t in plan if t.name in dplan.in_block and t.role == "hidden"]
        w0 = {n: params[n].detach().clone() for n in hidden}
        s0 = snapshot()
        opt = make_optimizer(model, optimizer, lr)
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(model(x)).backward()
            opt.step()
        s1 = snapshot()
    finally:
        for h in handles:
            h.remove()
    h0, h1 = s0["stream"], s1["stream"]
    return {
        "stream0": _rms(h0), "dstream": _rms(h1 - h0), "rel": (h1 - h0).norm().item() / h0.norm().item(),
        "branch0": float(np.mean([_rms(s0[n]) for n in dplan.branches])),
        "dbranch": float(np.mean([_rms(s1[n] - s0[n]) for n in dplan.branches])),
        "dW": float(np.mean([(params[n].detach() - w0[n]).norm().item() / w0[n].norm().item() for n in hidden])),
        "dout": _rms(s1["out"] - s0["out"]),
    }


def depth_coord_check(make: Callable[[int, int], nn.Module], depths: Sequence[int], x, loss_fn: Callable, *,
                      steps: int = 3, lr: float = 1e-2, optimizer: str = "adam", seeds: Sequence[int] = (0, 1),
                      tol: float = 0.15, progress: bool = False) -> DepthCoordResult:
    """Sizes vs depth for one depth rule: `make(L, seed)` builds the model at depth L (fixed width and base
    depth; every L with the same rule), `loss_fn(output)` the scalar loss on the fixed batch `x`.

    Returns a `DepthCoordResult` with a slope, the rule's predicted range and a verdict per quantity
    (see the module docstring); `.table()` prints it.
    """
    from ..parameterize import get_plan
    from ..schemes import optimizer_family

    depths = list(depths)
    if len(depths) < 2 or len(set(depths)) != len(depths):
        raise ValueError(f"depths must list at least 2 distinct depths, got {depths}")
    raw = {q: np.zeros((len(depths), len(seeds))) for q in QUANTITIES}
    rule = None
    it = [(i, L, j, s) for i, L in enumerate(depths) for j, s in enumerate(seeds)]
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="depth coord check")
    for i, L, j, s in it:
        torch.manual_seed(s)
        model = make(L, s)
        dplan = get_plan(model).depth
        if dplan is not None and rule is not None and dplan.rule != rule:
            raise ValueError(f"make() gave rule {dplan.rule.name} at L={L} but {rule.name} before: one rule per check")
        out = measure_once(model, x, loss_fn, steps, lr, optimizer)
        rule = get_plan(model).depth.rule
        if get_plan(model).depth.depth != L:
            raise ValueError(f"make({L}, seed) built a model with {get_plan(model).depth.depth} residual blocks")
        for q in QUANTITIES:
            raw[q][i, j] = out[q]
    pred = predicted_depth_slopes(rule.alpha, optimizer_family(optimizer))
    res = DepthCoordResult(rule.name, depths, raw)
    for q in QUANTITIES:
        v = raw[q]
        slope = fit_slope(depths, v)[0] if np.all(np.isfinite(v) & (v > 0)) else float("nan")
        p = pred.get(q)
        lo, hi = (None, None) if p is None else p
        passed = None if p is None else agrees(slope, lo, hi, tol)
        res.rows.append({"quantity": q, "slope": slope, "lo": lo, "hi": hi, "passed": passed, "tol": tol})
    return res
