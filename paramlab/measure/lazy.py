"""Laziness of residual blocks: how far a block's learned change is from its linearization at init.

CompleteP (Dey et al. 2025, arXiv 2505.01618, Fig. 6; reference notebook EleutherAI/nanoGPT-mup
branch `completep`, completep_examples/relative_distance_from_linearization.ipynb) calls a block
lazy when it learns only its linearization in its own parameters. For a residual block with
function G(x; theta) = block(x) - x (its branches, after their depth multiplier), at its input x at
init (held fixed) and its parameters theta_0 (init) and theta_t (trained):

    G_lin  = G(x; theta_0) + J_theta G(x; theta_0) . (theta_t - theta_0)     first-order Taylor term
    nonlin = ||G(theta_t) - G_lin|| / ||G(theta_t) - G(theta_0)||           share of the block's own change
                                                                            that is not linear in theta
    ref    = ||G(theta_t) - G_lin|| / ||G_lin||                              the reference normalization

Both go to 0 for a lazy block. With a smooth activation the remainder is second order in the step,
so after a few Adam steps nonlin ~ |dtheta| ~ m_L^(alpha-1) (depth-muP -1/2, CompleteP 0: blocks stay
non-lazy at any depth) and ref ~ m_L^(2(alpha-1)). The Taylor term is exact (one `torch.func.jvp`
over every sample and unit), not estimated.

NB the reference notebook's first-order term `torch.sum(delta_w[0,:] * grad[0:])` broadcasts row 0
of delta_w against the whole gradient (sum_ij dW_0j dF/dW_ij). That is the Taylor term only when
dF/dW has one nonzero row (one layer per branch, the notebook's own K == 1 test); its K = 2 runs are
not, and with ReLU and lr 1e-4 its numbers measure the step size (slope -1/2 for depth-muP) while
the exact remainder is at float64 roundoff. With GELU and lr 1e-2 the exact estimator shows the
paper's claim: nonlin slope -0.55 (depth-muP), -0.04 (CompleteP) over L = 2..256.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp

__all__ = ["LazinessProbe", "linearization"]


class _explicit_attention:
    """Route paramlab attention through its explicit path while measuring (torch's fused CPU attention
    has no forward-mode AD)."""

    def __init__(self, module: nn.Module):
        self.mods = [m for m in module.modules() if hasattr(m, "explicit")]

    def __enter__(self):
        self.old = [m.explicit for m in self.mods]
        for m in self.mods:
            m.explicit = True

    def __exit__(self, *exc):
        for m, o in zip(self.mods, self.old):
            m.explicit = o


def linearization(module: nn.Module, x: torch.Tensor, theta0: dict, theta1: dict, residual: bool = True) -> dict:
    """Distance of `module`'s change from its linearization at theta0, at the fixed input x.

    theta0 / theta1: parameter name (as `module.named_parameters` spells it) -> tensor, at init and
    after training. residual: measure G(x) = module(x) - x (a residual block) instead of module(x).
    Returns {"rem", "change", "lin_step", "f0", "nonlin", "ref"} (norms over every sample and unit).
    """
    if set(theta0) != set(theta1):
        raise ValueError("theta0 and theta1 must name the same parameters")
    dtheta = {k: theta1[k] - theta0[k] for k in theta0}

    def g(params):
        out = functional_call(module, params, (x,))
        return out - x if residual else out

    with _explicit_attention(module):
        with torch.no_grad():
            f1 = g(theta1)
        f0, df_lin = jvp(g, (theta0,), (dtheta,))  # G(theta0) and J . dtheta in one pass
    rem = (f1 - f0 - df_lin).norm().item()
    change = (f1 - f0).norm().item()
    lin = (f0 + df_lin).norm().item()
    return {"rem": rem, "change": change, "lin_step": df_lin.norm().item(), "f0": f0.norm().item(),
            "nonlin": rem / change if change > 0 else float("nan"), "ref": rem / lin if lin > 0 else float("nan")}


class LazinessProbe:
    """Capture every residual block's input and parameters at init; `measure()` after training.

        probe = LazinessProbe(model, x)     # at init: one forward pass on x
        ... train ...
        probe.measure() -> {"nonlin": mean over blocks, "ref": ..., "per_block": [{block, nonlin, ...}]}

    The blocks are the model's depth plan's (`paramlab.get_plan(model).depth.blocks`): build it with
    base_depth= (any depth_scaling, None included) or parameterize(..., branches=...).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor):
        from ..parameterize import get_plan

        dplan = get_plan(model).depth
        if dplan is None:
            raise ValueError("LazinessProbe needs the model's residual blocks: build it with base_depth= (and any "
                             "depth_scaling, None included) or parameterize(..., branches=...)")
        self.model = model
        mods = dict(model.named_modules())
        self.blocks = {b: mods[b] for b in dplan.blocks}
        self.inputs: dict[str, torch.Tensor] = {}
        hooks = [m.register_forward_pre_hook(lambda mod, a, k=b: self.inputs.__setitem__(k, a[0].detach().clone()))
                 for b, m in self.blocks.items()]
        try:
            with torch.no_grad():
                model(x)
        finally:
            for h in hooks:
                h.remove()
        self.theta0 = {b: self._theta(m) for b, m in self.blocks.items()}

    @staticmethod
    def _theta(module: nn.Module) -> dict:
        return {n: p.detach().clone() for n, p in module.named_parameters()}

    def measure(self) -> dict:
        rows = [{"block": b, **linearization(m, self.inputs[b], self.theta0[b], self._theta(m))}
                for b, m in self.blocks.items()]
        return {"nonlin": float(np.nanmean([r["nonlin"] for r in rows])),
                "ref": float(np.nanmean([r["ref"] for r in rows])), "per_block": rows}
