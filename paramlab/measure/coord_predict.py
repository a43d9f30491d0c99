"""Predicted width exponents for a coordinate check: from a model's plan, by linear response.

Exponents of width n (n^p: slope p). For a paramlab model they follow from its plan: each tensor's
effective init std ``a+b``, effective step ``s`` (SGD ``2a+c_sgd``, Adam ``a+c_adam``) and role, by
the linear-response rules of THEORY.md §3.1-3.3 (TP4 §3 and Prop. 5.3) and §5.4. Walking the modules
in the order their forward calls finish, with ``back`` the exponent of the backward signal
``df/dh`` (``std_out`` for the first update, ``min(std_out, s_out)`` once the readout has moved),
``size`` the exponent of the signal's coordinates at init and ``d`` that of its change:

    input layer   size = -std                      d = -(s + back)      [SGD]   -s      [Adam]
    hidden layer  size = 1/2 - std + size          d = max(1 + 2 size - s - back, d + max(0, 1/2 - std, 1 - 2 std))
                                                   (Adam: 1 + size - s instead of 1 + 2 size - s - back)
    readout       size = 1/2 - std + size          d = max(1 + 2 size - s, d + 1 - std)     (Adam: 1 + size - s)
    bias/gain     d = max(d, -(s + back))  (Adam: -s); a nonzero init adds max(size, -std)
    no parameters (activations, pooling): unchanged while size <= 0 and d <= 0; unknown after a
                  blow-up passed through them (a tanh saturates, a linear map would not)

act = max(size, d), dact = d. Weights, with ``w_r``, ``w_c`` = 1 where the row / column dim grows:

    dW/rms, upd/rms = -(s + back) (input, hidden, vector), -s (readout, scalar)    [SGD]; -s [Adam]
    dW/spec, upd/spec = rms + (w_r + w_c)/2         (the change has rank <= batch * steps)
    W/rms = max(-std, dW/rms);  W/spec at init: the slope of std * (sqrt(rows) + sqrt(cols)) over
    the actual shapes (Bai-Yin; sqrt(len) for vectors), after: that or dW/spec, whichever is larger.

Examples (one SGD step, THEORY.md §3.3): muP hidden preactivation change 0, NTK -1/2, SP with LR 1/n
input layer -3/2, muP logits at init -1/2; §5.4: muP ||dW||_2 ~ sqrt(fan_out / fan_in).
These hold for a stable scheme at every step. For an unstable one (some d > 0) only t = 0 and the
changes of the first update are predicted (after that the sizes depend on the nonlinearity).
Scalar tensors (no width dim, e.g. the readout bias) get no prediction: one signed number does not
concentrate, so its log-log slope over a few seeds is noise. A quantity that is a sum of terms with
different exponents (act = init + change, W_t = W_0 + dW, a weight term plus a nonzero-init bias)
has its asymptotic exponent as ``predicted`` and the smallest term's as ``predicted_lo``: over a
finite range of widths the fitted slope lies in between (e.g. muP logits after one step,
f_0 ~ n^-1/2 plus df ~ 1). A tied readout (the embedding's tensor used again as the readout) adds
a law-of-large-numbers part to its logits, since the residual stream carries each input token's
embedding, whose readout row is that same embedding: 1 - std + size beside the CLT's 1/2 - std + size
(muP: Theta(1) beside n^-1/2). Models set up with the `mup` package (parameters with ``infshape``) get
the muP invariants of THEORY.md §4.5 (assuming MuSGD / MuAdam). Pass ``predicted=`` for anything else.

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from torch import nn

from ..parameterize import PLAN_ATTR
from ..schemes import backward_signal_exponent, invariants
from .fit import fit_slope


@dataclass(frozen=True)
class TensorInfo:
    """What the predictions need to know about one parameter."""

    name: str
    module: str
    role: str  # input, hidden, output, vector, scalar
    std: float  # exponent of the effective init std (a + b)
    sgd: float  # exponent of the effective SGD step (2a + c_sgd)
    adam: float  # exponent of the effective Adam step (a + c_adam)
    zero_init: bool = False
    mult: float = 1.0  # forward multiplier: effective weight = mult * parameter
    tied: str | None = None  # a further use of another tensor (a tied readout): that tensor's name

    def step(self, family: str) -> float:
        return self.adam if family == "adam" else self.sgd

    def grows(self) -> tuple[bool, bool]:
        """(row dim grows, column dim grows) of the 2-D view."""
        return {"input": (True, False), "hidden": (True, True), "output": (False, True),
                "vector": (True, False), "scalar": (False, False)}[self.role]


def parameter_owners(model: nn.Module) -> dict[str, str]:
    """parameter name -> the name of the module that owns it (first owner of a shared tensor)."""
    owner = {}
    for mname, mod in model.named_modules():
        for pname, p in mod._parameters.items():
            if p is not None:
                owner.setdefault(f"{mname}.{pname}" if mname else pname, mname)
    return owner


def plan_tensor_infos(model: nn.Module) -> dict[str, TensorInfo]:
    """name -> TensorInfo from the model's paramlab plan; {} if it has none.

    Each tensor sits at the module of its primary use; a further use of a tied tensor (a readout that
    shares the embedding) is an entry of its own, under the use's name, with the use's role and
    multiplier and the tensor's init and learning rate (std = a_use + b, step 2 a_use + c or a_use + c).
    """
    plan = getattr(model, PLAN_ATTR, None)
    if plan is None:
        return {}
    infos = {t.name: TensorInfo(t.name, t.module, t.role, *invariants(t.a, t.b, t.c_sgd, t.c_adam),
                                t.init == "zeros", t.mult) for t in plan}
    for u in plan.uses:
        t = plan[u.tensor]
        infos[u.name] = TensorInfo(u.name, u.module, u.role, *invariants(u.a, t.b, t.c_sgd, t.c_adam),
                                   t.init == "zeros", u.mult, tied=u.tensor)
    return infos


_EPS = 1e-12


def _upd_rms(t: TensorInfo, family: str, back: float) -> float:
    """Exponent of one update's RMS: -s, and -(s + back) for an SGD step on a tensor the backward
    signal reaches (input, hidden, vector)."""
    s = t.step(family)
    if family == "adam" or t.role in ("output", "scalar"):
        return -s
    return -(s + back)


def _walk(order, by_module: Mapping[str, list], family: str, back: float | None) -> dict[str, tuple | None]:
    """{name: (size_lo, size_hi, d)} along the forward order; None where unknown. back None: init only."""
    adam = family == "adam"
    lo = hi = 0.0  # the data: Theta(1), fixed
    d = None if back is None else -math.inf  # the data do not change
    res: dict[str, tuple | None] = {}
    blown = False
    for rec, mname in order:
        ts = by_module.get(mname, [])
        mats = [t for t in ts if t.role in ("input", "hidden", "output")]
        vecs = [t for t in ts if t.role in ("vector", "scalar")]
        if not ts:  # parameterless: a nonlinearity keeps exponents only while the signal is O(1)
            blown = blown or hi > _EPS or (d is not None and d > _EPS)
        if blown:
            res[rec] = None
            continue
        if mats:
            w = mats[0]
            s = w.step(family)
            if w.role == "input":
                lo = hi = -w.std
                nd = None if back is None else (-s if adam else -(s + back))
            else:
                grow = 0.5 - w.std  # iid weights on a Theta(n^size) vector (CLT)
                lo, hi = grow + lo, grow + hi
                if w.tied is not None:  # a tied readout: its row of each input token is in the signal (LLN)
                    hi += 0.5
                if back is None or d is None:
                    nd = None
                else:
                    size = hi
                    if adam:
                        own = 1 + size - s
                    else:
                        own = 1 + 2 * size - s - (0.0 if w.role == "output" else back)
                    prop = d + (1 - w.std if w.role == "output" else max(0.0, 0.5 - w.std, 1 - 2 * w.std))
                    nd = max(own, prop)
            d = nd
        for v in vecs:
            if back is not None and d is not None:
                d = max(d, _upd_rms(v, family, back))
            if not v.zero_init:
                lo, hi = min(lo, -v.std), max(hi, -v.std)
        res[rec] = (lo, hi, d)
    return res


def _activation_slopes(order, out_mods: set, walks: tuple, steps: int, unstable_1: bool, unstable_2: bool) -> dict:
    """act / dact rows from the walks at init, after the first update and after later ones."""
    init, first, later = walks
    pred = {}
    after_out, seen_out = set(), False  # the readout and what follows it: the logits
    for rec, mname in order:
        seen_out = seen_out or mname in out_mods
        if seen_out:
            after_out.add(rec)

    for rec, r in init.items():
        if r is not None:
            for q in ("act/rms", "act/l1"):
                pred[(rec, q, 0)] = (r[0], r[1])
    for t in range(1, steps + 1):
        if t >= 2 and unstable_2:
            break
        for rec, r in (first if t == 1 else later).items():
            if r is None or r[2] is None or not math.isfinite(r[2]):
                continue
            if unstable_1 and rec in after_out:  # the logits of an unstable scheme: depends on the nonlinearity
                continue
            lo, hi, d = r
            for q in ("dact/rms", "dact/l1"):
                pred[(rec, q, t)] = (d, d)
            if not unstable_1:
                for q in ("act/rms", "act/l1"):
                    pred[(rec, q, t)] = (min(lo, d), max(hi, d))
    return pred


def _w0_spec(t: TensorInfo, shapes, widths) -> float:
    """Slope of the spectral norm at init: std * (sqrt(rows) + sqrt(cols)) over the actual shapes."""
    gr, gc = t.grows()
    if shapes is None or widths is None or t.name not in shapes:
        return -t.std + max(gr, gc) * 0.5
    vals = []
    for shp in shapes[t.name]:
        r = shp[0] if len(shp) else 1
        c = int(np.prod(shp[1:])) if len(shp) > 1 else 1
        vals.append(math.sqrt(max(r, c)) if min(r, c) == 1 else math.sqrt(r) + math.sqrt(c))
    return -t.std + fit_slope(widths, vals)[0]


def _weight_slopes(infos: Mapping[str, TensorInfo], family: str, back_of: Mapping[int, float], steps: int,
                   unstable_1: bool, unstable_2: bool, shapes, widths) -> dict:
    """W / dW / upd rows of every tensor but scalars."""
    pred = {}
    for t in infos.values():
        if t.role == "scalar":  # no width dim: Theta(1), but one signed number does not concentrate
            continue
        gr, gc = t.grows()
        spec_add = 0.5 * (gr + gc)  # the change has rank <= batch * steps
        if not t.zero_init:
            pred[(t.name, "W/rms", 0)] = (-t.std, -t.std)
            pred[(t.name, "W/spec", 0)] = (_w0_spec(t, shapes, widths),) * 2
        for step in range(1, steps + 1):
            if step >= 2 and unstable_2:
                break
            # the change since init is dominated by the largest update, the last one (back_2 <= back_1)
            u = _upd_rms(t, family, back_of[min(step, 2)])
            for tag in ("dW", "upd"):
                pred[(t.name, f"{tag}/rms", step)] = (u, u)
                pred[(t.name, f"{tag}/spec", step)] = (u + spec_add, u + spec_add)
            if unstable_1:
                continue
            if t.zero_init:
                pred[(t.name, "W/rms", step)] = (u, u)
                pred[(t.name, "W/spec", step)] = (u + spec_add, u + spec_add)
            else:
                pred[(t.name, "W/rms", step)] = (min(-t.std, u), max(-t.std, u))
                w0 = _w0_spec(t, shapes, widths)
                pred[(t.name, "W/spec", step)] = (min(w0, u + spec_add), max(w0, u + spec_add))
    return pred


def predict_slopes(order: Sequence[tuple[str, str]], infos: Mapping[str, TensorInfo], family: str, steps: int,
                   shapes: Mapping[str, Sequence[tuple]] | None = None, widths: Sequence[int] | None = None
                   ) -> dict[tuple[str, str, int], tuple[float, float]]:
    """Predicted slopes {(name, quantity, step): (lo, hi)} (see the module docstring for the rules).

    ``hi`` is the asymptotic exponent. When a quantity is a sum of terms with different exponents
    (the init and the change of an activation or weight, a weight term and a nonzero-init bias) the
    finite-width slope lies between them, so ``lo`` is the smallest term's exponent; lo == hi otherwise.
    order: (recorded name, module name) in the order the forward calls finish. infos: name ->
    TensorInfo. shapes: param name -> its shape at each width (for the finite-size W/spec slope).
    Rows the rules do not cover are absent.
    """
    by_module: dict[str, list[TensorInfo]] = {}
    for t in infos.values():
        by_module.setdefault(t.module, []).append(t)
    outs = [t for t in infos.values() if t.role == "output"]
    if not outs:
        return {}
    std_out = min(t.std for t in outs)
    s_out = min(t.step(family) for t in outs)
    # backward-signal exponent for update u (u >= 2 alike: the readout has moved)
    back_of = {1: backward_signal_exponent(std_out), 2: backward_signal_exponent(std_out, s_out)}
    init, first, later = (_walk(order, by_module, family, back) for back in (None, back_of[1], back_of[2]))
    unstable_1 = any(r is None or r[1] > _EPS for r in init.values()) or any(
        r is not None and r[2] is not None and r[2] > _EPS for r in first.values())
    unstable_2 = unstable_1 or any(r is not None and r[2] is not None and r[2] > _EPS for r in later.values())
    pred = _activation_slopes(order, {t.module for t in outs}, (init, first, later), steps, unstable_1, unstable_2)
    pred.update(_weight_slopes(infos, family, back_of, steps, unstable_1, unstable_2, shapes, widths))
    return pred
