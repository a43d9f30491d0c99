"""Coordinate check: how the sizes of activations and weight updates scale with width.

`coord_check(make_model, widths, x, y)` builds the model at every width (and seed), trains it for a
few steps on one fixed batch, and records at steps t = 0..T (t = 0: at init, before any update; the
forward pass of step t is the one whose loss gives update t+1) for every module and parameter:

    act/rms, act/l1      RMS and mean |.| of the module's output on the batch (mup's 'l2'/'l1')
    dact/rms, dact/l1    the same for its change since init, out_t - out_0        (t >= 1)
    W/rms, W/spec        RMS and spectral norm of the effective weight (multiplier included)
    dW/rms, dW/spec      the same for W_t - W_0, the change since init            (t >= 1)
    upd/rms, upd/spec    the same for W_t - W_{t-1}, the last update               (t >= 1)

(spectral norms on the 2-D view (fan_out, -1), vectors: l2 norm; see `features.spectral_norm`).
Then it fits the log-log slope against width (`fit_slope`, seeds averaged in log space) for every
(name, quantity, step), compares it with a predicted slope, and gives a verdict with the tolerance used.

Predicted slopes
----------------
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
f_0 ~ n^-1/2 plus df ~ 1). Models set up with the `mup` package (parameters with ``infshape``) get
the muP invariants of THEORY.md §4.5 (assuming MuSGD / MuAdam). Pass ``predicted=`` for anything else.

Verdict per row: ``agrees`` = predicted_lo - tol <= slope <= predicted + tol (None without a
prediction); ``stable`` = slope <= tol for act/dact rows (coordinates must not grow with width; None
for weights, whose norms may legitimately grow, e.g. ||W_in||_2 ~ sqrt(n)); ``passed`` = neither is
False and the values are finite. A name passes if all its rows pass.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .features import Capture, capture, leaf_module_names, spectral_norm
from .fit import fit_slope

ACT_QUANTITIES = ("act/rms", "act/l1", "dact/rms", "dact/l1")
WEIGHT_QUANTITIES = ("W/rms", "W/spec", "dW/rms", "dW/spec", "upd/rms", "upd/spec")
QUANTITIES = ACT_QUANTITIES + WEIGHT_QUANTITIES

# muP invariants of a model set up with the `mup` package and trained with MuSGD / MuAdam
# (THEORY.md §4.5): role -> (effective init std, SGD step, Adam step) exponents of 1/m.
MUP_PACKAGE_INVARIANTS = {"input": (0.0, -1.0, 0.0), "hidden": (0.5, 0.0, 1.0), "output": (1.0, 1.0, 1.0),
                          "vector": (0.0, -1.0, 0.0), "scalar": (0.0, 0.0, 0.0)}


# -- per-tensor description used for predictions ---------------------------------------------------------


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

    def step(self, family: str) -> float:
        return self.adam if family == "adam" else self.sgd

    def grows(self) -> tuple[bool, bool]:
        """(row dim grows, column dim grows) of the 2-D view."""
        return {"input": (True, False), "hidden": (True, True), "output": (False, True),
                "vector": (True, False), "scalar": (False, False)}[self.role]


def tensor_infos(model: nn.Module) -> dict[str, TensorInfo]:
    """name -> TensorInfo from a paramlab plan, or from `mup` infshapes; {} if the model has neither."""
    from ..parameterize import PLAN_ATTR

    owner = {}
    for mname, mod in model.named_modules():
        for pname, p in mod._parameters.items():
            if p is not None:
                owner.setdefault(f"{mname}.{pname}" if mname else pname, mname)
    plan = getattr(model, PLAN_ATTR, None)
    if plan is not None:
        return {t.name: TensorInfo(t.name, owner.get(t.name, ""), t.role, t.a + t.b, 2 * t.a + t.c_sgd,
                                   t.a + t.c_adam, t.init == "zeros", t.mult) for t in plan}
    infos = {}
    mods = dict(model.named_modules())
    for name, p in model.named_parameters():
        shape = getattr(p, "infshape", None)
        if shape is None:
            return {}
        mod = mods[owner[name]]
        ninf = shape.ninf()
        is_readout = hasattr(mod, "output_mult") and hasattr(mod, "width_mult")
        mult = 1.0
        if is_readout and name.endswith("weight"):
            role = "output"
            mult = float(mod.output_mult) / float(mod.width_mult())
        elif ninf == 2:
            role = "hidden"
        elif ninf == 1:
            role = "input" if p.dim() >= 2 else "vector"
        else:
            role = "scalar"
        std, sgd, adam = MUP_PACKAGE_INVARIANTS[role]
        infos[name] = TensorInfo(name, owner[name], role, std, sgd, adam, bool((p == 0).all()), mult)
    return infos


def _family_of(opt: torch.optim.Optimizer) -> str:
    return "adam" if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam,
                                      torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad)) else "sgd"


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
    adam = family == "adam"
    back_of = {1: std_out, 2: min(std_out, s_out)}  # backward-signal exponent for update u (u >= 2 alike)
    eps = 1e-12

    def upd_rms(t: TensorInfo, back: float) -> float:
        s = t.step(family)
        if adam or t.role in ("output", "scalar"):
            return -s
        return -(s + back)

    def walk(back: float | None) -> dict[str, tuple | None]:
        """{name: (size_lo, size_hi, d)} along the forward order; None where unknown. back None: init only."""
        lo = hi = 0.0  # the data: Theta(1), fixed
        d = None if back is None else -math.inf  # the data do not change
        res: dict[str, tuple | None] = {}
        blown = False
        for rec, mname in order:
            ts = by_module.get(mname, [])
            mats = [t for t in ts if t.role in ("input", "hidden", "output")]
            vecs = [t for t in ts if t.role in ("vector", "scalar")]
            if not ts:  # parameterless: a nonlinearity keeps exponents only while the signal is O(1)
                blown = blown or hi > eps or (d is not None and d > eps)
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
                    d = max(d, upd_rms(v, back))
                if not v.zero_init:
                    lo, hi = min(lo, -v.std), max(hi, -v.std)
            res[rec] = (lo, hi, d)
        return res

    pred: dict[tuple[str, str, int], tuple[float, float]] = {}
    init, first, later = walk(None), walk(back_of[1]), walk(back_of[2])
    unstable_1 = any(r is None or r[1] > eps for r in init.values()) or any(
        r is not None and r[2] is not None and r[2] > eps for r in first.values())
    unstable_2 = unstable_1 or any(r is not None and r[2] is not None and r[2] > eps for r in later.values())
    out_mods = {t.module for t in outs}
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

    # weights
    def w0_spec(t: TensorInfo) -> float:
        gr, gc = t.grows()
        if shapes is None or widths is None or t.name not in shapes:
            return -t.std + max(gr, gc) * 0.5
        vals = []
        for shp in shapes[t.name]:
            r = shp[0] if len(shp) else 1
            c = int(np.prod(shp[1:])) if len(shp) > 1 else 1
            vals.append(math.sqrt(max(r, c)) if min(r, c) == 1 else math.sqrt(r) + math.sqrt(c))
        return -t.std + fit_slope(widths, vals)[0]

    for t in infos.values():
        if t.role == "scalar":  # no width dim: Theta(1), but one signed number does not concentrate
            continue
        gr, gc = t.grows()
        spec_add = 0.5 * (gr + gc)  # the change has rank <= batch * steps
        if not t.zero_init:
            pred[(t.name, "W/rms", 0)] = (-t.std, -t.std)
            pred[(t.name, "W/spec", 0)] = (w0_spec(t),) * 2
        for step in range(1, steps + 1):
            if step >= 2 and unstable_2:
                break
            # the change since init is dominated by the largest update, the last one (back_2 <= back_1)
            u = upd_rms(t, back_of[min(step, 2)])
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
                w0 = w0_spec(t)
                pred[(t.name, "W/spec", step)] = (min(w0, u + spec_add), max(w0, u + spec_add))
    return pred


# -- running ----------------------------------------------------------------------------------------------


def _loss_fn(loss) -> Callable:
    if callable(loss):
        return loss
    if loss == "mse":
        return lambda out, y: 0.5 * (out - y).square().reshape(out.shape[0], -1).sum(-1).mean()
    if loss in ("xent", "ce", "cross_entropy"):
        return lambda out, y: F.cross_entropy(out, y)
    raise ValueError(f"unknown loss {loss!r}: use 'mse', 'xent' or a callable(out, y)")


def _make_optimizer(model: nn.Module, optimizer, lr) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        opt = optimizer(model)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer(model) must return a torch.optim.Optimizer, got {type(opt).__name__}")
        return opt
    name = str(optimizer).lower()
    if name not in ("sgd", "adam", "adamw"):
        raise ValueError(f"unknown optimizer {optimizer!r}: use 'sgd', 'adam', 'adamw' or a callable(model) -> optimizer")
    if lr is None:
        lr = 0.1 if name == "sgd" else 1e-3  # mup's get_coord_data defaults
    from ..parameterize import PLAN_ATTR

    if getattr(model, PLAN_ATTR, None) is not None:
        from ..optim import optimizer as make

        return make(model, name, lr=lr)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(model.parameters(), lr=lr)


def _stats(t: torch.Tensor) -> tuple[float, float]:
    t = t.detach().double()
    return float(t.square().mean().sqrt()), float(t.abs().mean())


def _wanted(quantities) -> tuple[str, ...]:
    if quantities is None:
        return QUANTITIES
    out = []
    for q in quantities:
        hits = [k for k in QUANTITIES if k == q or k.split("/")[0] == q]
        if not hits:
            raise ValueError(f"unknown quantity {q!r}: quantities are {', '.join(QUANTITIES)} "
                             "(or a prefix: act, dact, W, dW, upd)")
        out += [h for h in hits if h not in out]
    return tuple(out)


def _run(model, opt, x, y, loss_fn, steps, names, qs, infos, spectral_kw, record):
    """Train `steps` steps on (x, y), calling record(step, name, quantity, value)."""
    cap = Capture(model, names)
    try:
        params = dict(model.named_parameters())
        want_w = any(q in qs for q in WEIGHT_QUANTITIES)
        mods = names if names is not None else leaf_module_names(model)
        wnames = []
        if want_w:
            owned = {}
            for mname, mod in model.named_modules():
                for pname, p in mod._parameters.items():
                    if p is not None:
                        owned.setdefault(f"{mname}.{pname}" if mname else pname, mname)
            wnames = [n for n, m in owned.items() if m in set(mods) and params[n].is_floating_point()]
        mult = {n: (infos[n].mult if n in infos else 1.0) for n in wnames}
        w0 = {n: params[n].detach().clone() for n in wnames}
        prev = dict(w0)
        out0 = None
        for t in range(steps + 1):
            for n in wnames:  # weights used by the forward pass of step t
                cur = params[n].detach()
                for tag, tensor in (("W", cur), ("dW", cur - w0[n]), ("upd", cur - prev[n])):
                    if tag != "W" and t == 0:
                        continue
                    eff = tensor.double() * mult[n]
                    if f"{tag}/rms" in qs:
                        record(t, n, f"{tag}/rms", float(eff.square().mean().sqrt()))
                    if f"{tag}/spec" in qs:
                        record(t, n, f"{tag}/spec", spectral_norm(eff, **spectral_kw))
                prev[n] = cur.clone()
            cap.clear()
            if t < steps:
                opt.zero_grad(set_to_none=True)
                out = model(x)
                acts = cap.outputs
                loss = loss_fn(out, y)
                loss.backward()
            else:
                with torch.no_grad():
                    model(x)
                acts = cap.outputs
            if out0 is None:
                out0 = acts
            for name, a in acts.items():
                rms, l1 = _stats(a)
                if "act/rms" in qs:
                    record(t, name, "act/rms", rms)
                if "act/l1" in qs:
                    record(t, name, "act/l1", l1)
                if t > 0 and name in out0 and out0[name].shape == a.shape:
                    rms, l1 = _stats(a - out0[name])
                    if "dact/rms" in qs:
                        record(t, name, "dact/rms", rms)
                    if "dact/l1" in qs:
                        record(t, name, "dact/l1", l1)
            if t < steps:
                opt.step()
        return list(out0.keys()), wnames
    finally:
        cap.remove()


# -- results ---------------------------------------------------------------------------------------------


@dataclass
class CoordResult:
    """Records and fits of a coordinate check.

    records: one dict per measurement {width, seed, step, name, quantity, value}.
    fits: one dict per (name, quantity, step) {name, quantity, step, slope, intercept, predicted,
    predicted_lo, tol, agrees, stable, passed, note}.
    """

    widths: list[int]
    seeds: list[int]
    steps: int
    family: str
    records: list[dict] = field(default_factory=list)
    fits: list[dict] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # module names in forward order
    params: list[str] = field(default_factory=list)  # parameter names measured

    def values(self, name: str, quantity: str, step: int) -> np.ndarray:
        """(n_widths, n_seeds) array of one measurement (nan where missing)."""
        out = np.full((len(self.widths), len(self.seeds)), np.nan)
        wi = {w: i for i, w in enumerate(self.widths)}
        si = {s: i for i, s in enumerate(self.seeds)}
        for r in self.records:
            if r["name"] == name and r["quantity"] == quantity and r["step"] == step:
                out[wi[r["width"]], si[r["seed"]]] = r["value"]
        return out

    def fit(self, name: str, quantity: str, step: int) -> dict:
        for f in self.fits:
            if f["name"] == name and f["quantity"] == quantity and f["step"] == step:
                return f
        raise KeyError(f"no fit for ({name!r}, {quantity!r}, step {step}); names: {self.order + self.params}")

    def slope(self, name: str, quantity: str, step: int) -> float:
        return self.fit(name, quantity, step)["slope"]

    def verdicts(self) -> dict[str, bool]:
        """name -> True iff all its rows passed."""
        out: dict[str, bool] = {}
        for f in self.fits:
            out[f["name"]] = out.get(f["name"], True) and f["passed"]
        return out

    @property
    def passed(self) -> bool:
        return all(f["passed"] for f in self.fits)

    def failures(self) -> list[dict]:
        return [f for f in self.fits if not f["passed"]]

    def frame(self):
        """The records as a pandas DataFrame (pandas imported lazily)."""
        import pandas as pd

        return pd.DataFrame(self.records)


def _fit_all(res: CoordResult, pred: Mapping, user_pred, tol) -> None:
    keys = []
    seen = set()
    for r in res.records:
        k = (r["name"], r["quantity"], r["step"])
        if k not in seen:
            seen.add(k)
            keys.append(k)
    for name, q, step in keys:
        vals = res.values(name, q, step)
        p = _lookup(user_pred, name, q, step)
        if p is None:
            p = pred.get((name, q, step))
        lo = None
        if p is not None:
            lo, p = (float(p[0]), float(p[1])) if isinstance(p, (tuple, list)) else (float(p), float(p))
        tl = tol.get(q, tol.get(q.split("/")[0], 0.15)) if isinstance(tol, Mapping) else float(tol)
        row = {"name": name, "quantity": q, "step": step, "slope": math.nan, "intercept": math.nan,
               "predicted": p, "predicted_lo": lo, "tol": tl, "agrees": None, "stable": None, "passed": True, "note": ""}
        if not np.all(np.isfinite(vals)):
            row.update(passed=False, stable=False if q in ACT_QUANTITIES else None, note="non-finite (diverged)")
        elif np.all(vals == 0):
            row.update(note="zero at every width")
        elif np.any(vals <= 0):
            row.update(note="zero at some widths: no fit")
        else:
            s, c = fit_slope(res.widths, vals)
            row.update(slope=s, intercept=c)
            if p is not None:
                row["agrees"] = bool(lo - tl <= s <= p + tl)
            if q in ACT_QUANTITIES:
                row["stable"] = bool(s <= tl)
            row["passed"] = row["agrees"] is not False and row["stable"] is not False
        res.fits.append(row)


def _lookup(user, name, q, step):
    if user is None:
        return None
    if callable(user):
        return user(name, q, step)
    for key in ((name, q, step), (name, q)):
        if key in user:
            return user[key]
    v = user.get(name)
    if isinstance(v, Mapping):
        v = v.get(q, v.get(q.split("/")[0]))
        if isinstance(v, Mapping):
            v = v.get(step)
        return v
    return None


def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    optimizer="sgd",
    lr: float | None = None,
    steps: int = 3,
    seeds: Iterable[int] = (0, 1, 2),
    loss="mse",
    modules: Iterable[str] | None = None,
    quantities: Iterable[str] | None = None,
    predicted=None,
    auto_predict: bool = True,
    family: str | None = None,
    tol: float | Mapping[str, float] = 0.15,
    spectral: Mapping | None = None,
    progress: bool = False,
) -> CoordResult:
    """Coordinate check of ``make_model`` over ``widths`` and ``seeds`` on one fixed batch (x, y).

    Args:
        make_model: width -> model. Called after ``torch.manual_seed(seed)``, so a builder that draws
            from torch's global RNG (paramlab builders with seed=None, plain nn.Modules) gets one
            init per seed.
        optimizer: 'sgd', 'adam', 'adamw' (paramlab's per-tensor optimizer for a paramlab model, the
            plain torch one otherwise, with ``lr``; default lr 0.1 for SGD, 1e-3 for Adam as in mup),
            or a callable(model) -> torch optimizer (e.g. ``lambda m: mup.MuSGD(m.parameters(), lr=.1)``).
        steps: number of updates T; measurements at t = 0..T.
        loss: 'mse' (0.5 * sum over outputs, mean over the batch), 'xent' (y: class indices) or a
            callable(out, y) -> scalar.
        modules: module names to record (default: all leaf modules with a tensor output); the
            parameters these modules own are measured too.
        quantities: subset of QUANTITIES or prefixes ('act', 'dact', 'W', 'dW', 'upd'); default all.
        predicted: user slopes, overriding the automatic ones: a callable(name, quantity, step) ->
            slope or None, or a dict keyed by (name, quantity, step), (name, quantity), or
            name -> {quantity or prefix -> slope or {step: slope}}. A slope may be a (lo, hi) range.
        auto_predict: derive slopes from the model's plan (or mup infshapes); see the module docstring.
        family: 'sgd' or 'adam' for the predictions (default: from the optimizer's class).
        tol: tolerance on the predicted slope and on growth (float, or dict quantity/prefix -> tol).
        spectral: keyword arguments for `features.spectral_norm` (e.g. {"exact_max": 1024}).
        progress: show a tqdm progress bar.
    """
    widths = [int(w) for w in widths]
    seeds = [int(s) for s in seeds]
    if len(widths) < 2:
        raise ValueError(f"coord_check needs at least 2 widths to fit a slope, got {widths}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    qs = _wanted(quantities)
    loss_fn = _loss_fn(loss)
    names = None if modules is None else list(modules)
    res = CoordResult(widths=widths, seeds=seeds, steps=steps, family=family or "sgd")
    shapes: dict[str, list[tuple]] = {}
    first = None
    runs = [(w, s) for s in seeds for w in widths]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="coord_check")
    for w, s in runs:
        torch.manual_seed(s)
        model = make_model(w)
        p0 = next((p for p in model.parameters() if p.is_floating_point()), None)
        xx = x.to(device=p0.device, dtype=p0.dtype if x.is_floating_point() else x.dtype) if p0 is not None else x
        yy = y.to(device=xx.device, dtype=p0.dtype if (y.is_floating_point() and p0 is not None) else y.dtype)
        opt = _make_optimizer(model, optimizer, lr)
        if family is None:
            res.family = _family_of(opt)
        infos = tensor_infos(model)

        def record(t, name, q, v, w=w, s=s):
            res.records.append({"width": w, "seed": s, "step": t, "name": name, "quantity": q, "value": v})

        if first is None:  # the full forward order (all leaves and the requested modules) for the predictions
            every = list(dict.fromkeys(leaf_module_names(model) + (names or [])))
            with torch.no_grad(), capture(model, every, clone=False) as cap:
                model(xx)
                full_order = cap.order
        order, wnames = _run(model, opt, xx, yy, loss_fn, steps, names, qs, infos, dict(spectral or {}), record)
        if s == seeds[0]:
            for n, p in model.named_parameters():
                shapes.setdefault(n, []).append(tuple(p.shape))
        if first is None:
            first = (model, order, wnames, infos)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model, order, wnames, infos = first
    res.order, res.params = order, wnames
    pred = {}
    if auto_predict and infos:
        # (recorded name, module name) in forward order
        pairs = [(rec, rec.split("[")[0]) for rec in full_order]
        pred = predict_slopes(pairs, infos, res.family, steps, shapes, widths)
    _fit_all(res, pred, predicted, tol)
    return res


# -- reporting --------------------------------------------------------------------------------------------


def _fmt_pred(f: dict) -> str:
    p, lo = f["predicted"], f.get("predicted_lo")
    if p is None:
        return "-"
    if lo is None or abs(lo - p) < 1e-9:
        return f"{p:+.3f}"
    return f"{p:+.3f} [{lo:+.3f}, {p:+.3f}]"


def slope_table(result: CoordResult, quantities: Iterable[str] | None = None, steps: Iterable[int] | None = None,
                fmt: str = "markdown") -> str:
    """The fits as a markdown (or plain text, fmt='text') table: name, quantity, step, slope, predicted,
    tol, verdict."""
    qs = set(_wanted(quantities)) if quantities is not None else None
    st = set(steps) if steps is not None else None
    head = ["name", "quantity", "step", "slope", "predicted", "tol", "verdict"]
    rows = []
    for f in result.fits:
        if (qs is not None and f["quantity"] not in qs) or (st is not None and f["step"] not in st):
            continue
        verdict = "pass" if f["passed"] else "FAIL"
        if f["note"]:
            verdict += f" ({f['note']})"
        elif f["stable"] is False:
            verdict += " (grows)"
        elif f["agrees"] is False:
            verdict += " (off prediction)"
        rows.append([f["name"], f["quantity"], str(f["step"]),
                     "-" if math.isnan(f["slope"]) else f"{f['slope']:+.3f}",
                     _fmt_pred(f), f"{f['tol']:g}", verdict])
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt_row = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])


def plot_coord(result: CoordResult, path=None, quantity: str = "act/l1", names: Iterable[str] | None = None,
               steps: Iterable[int] | None = None):
    """mup-style coordinate-check plot: one panel per step, width on a log2 x-axis, one line per name
    (mean over seeds, log y-axis). Saves to ``path`` if given; returns the matplotlib Figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if names is None:
        names = result.order if quantity in ACT_QUANTITIES else result.params
    names = list(names)
    all_steps = sorted({r["step"] for r in result.records if r["quantity"] == quantity})
    steps = [s for s in all_steps if steps is None or s in set(steps)]
    if not steps:
        raise ValueError(f"no records of {quantity!r} in this result")
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps) + 2.6, 3.6), sharey=True, squeeze=False)
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    styles = ["-", "--", ":", "-."]  # 20 colours x 4 line styles before anything repeats
    for ax, t in zip(axes[0], steps):
        for i, n in enumerate(names):
            v = result.values(n, quantity, t)
            if np.all(np.isnan(v)):
                continue
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a width whose values are all 0 (zero init): NaN
                m = np.exp(np.nanmean(np.log(np.where(v > 0, v, np.nan)), axis=1))
            ax.plot(result.widths, m, marker="o", ms=3, label=n, color=cmap(i % cmap.N), ls=styles[(i // cmap.N) % 4])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"t = {t}")
        ax.set_xlabel("width")
    axes[0][0].set_ylabel(quantity)
    fig.legend(*axes[0][-1].get_legend_handles_labels(), fontsize=6, loc="center right",
               ncol=1 + len(names) // 24, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - (0.16 if len(names) <= 24 else 0.28) * 4 / max(4, len(steps)), 1))
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
