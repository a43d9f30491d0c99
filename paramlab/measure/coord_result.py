"""A coordinate check's records and fits: `CoordResult`, and the fit of every (name, quantity, step).

Quantities (per module output: ``act``, ``dact``; per parameter: ``W``, ``dW``, ``upd``; see
`paramlab.measure.coord`): RMS / mean |.| of activations and their change, RMS / spectral norm of
the effective weight, its change since init and the last update.

Verdict per row: ``agrees`` = predicted_lo - tol <= slope <= predicted + tol (None without a
prediction); ``stable`` = slope <= tol for act/dact rows (coordinates must not grow with width; None
for weights, whose norms may legitimately grow, e.g. ||W_in||_2 ~ sqrt(n)); ``passed`` = neither is
False and the values are finite. A name passes if all its rows pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from .fit import fit_slope

ACT_QUANTITIES = ("act/rms", "act/l1", "dact/rms", "dact/l1")
WEIGHT_QUANTITIES = ("W/rms", "W/spec", "dW/rms", "dW/spec", "upd/rms", "upd/spec")
QUANTITIES = ACT_QUANTITIES + WEIGHT_QUANTITIES
# what a coordinate check records unless asked: all but the spectral norms, which cost more than the
# rest of the check together (benchmarks/README.md); quantities="all" adds them
DEFAULT_QUANTITIES = tuple(q for q in QUANTITIES if not q.endswith("/spec"))


def wanted_quantities(quantities) -> tuple[str, ...]:
    """Quantity names from names or prefixes ('act', 'dact', 'W', 'dW', 'upd'); None or "all": all."""
    if quantities is None or quantities == "all":
        return QUANTITIES
    if isinstance(quantities, str):
        quantities = (quantities,)
    out = []
    for q in quantities:
        hits = [k for k in QUANTITIES if k == q or k.split("/")[0] == q]
        if not hits:
            raise ValueError(f"unknown quantity {q!r}: quantities are {', '.join(QUANTITIES)} "
                             "(or a prefix: act, dact, W, dW, upd)")
        out += [h for h in hits if h not in out]
    return tuple(out)



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
        hint = ""
        if quantity.endswith("/spec") and not any(f["quantity"] == quantity for f in self.fits):
            hint = (f"; {quantity} was not recorded: spectral norms are opt-in, "
                    f"coord_check(..., quantities='all') or e.g. quantities=('act', 'dact', '{quantity}')")
        raise KeyError(f"no fit for ({name!r}, {quantity!r}, step {step}); names: {self.order + self.params}{hint}")

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

    def to_dict(self, records: Iterable[str] | None = None, fits: Iterable[str] | None = None) -> dict:
        """Plain JSON-able data (what `from_dict` reads back). `records` / `fits`: keep only these
        quantities (names or prefixes, see `wanted_quantities`; None: all), e.g. what a plot and a
        table need."""
        def keep(rows, qs):
            qs = None if qs is None else set(wanted_quantities(qs))
            return [dict(r) for r in rows if qs is None or r["quantity"] in qs]

        return {"widths": list(self.widths), "seeds": list(self.seeds), "steps": self.steps, "family": self.family,
                "order": list(self.order), "params": list(self.params), "records": keep(self.records, records),
                "fits": keep(self.fits, fits)}

    @classmethod
    def from_dict(cls, data: Mapping) -> CoordResult:
        return cls(widths=list(data["widths"]), seeds=list(data["seeds"]), steps=int(data["steps"]),
                   family=data["family"], records=[dict(r) for r in data["records"]],
                   fits=[dict(f) for f in data["fits"]], order=list(data["order"]), params=list(data["params"]))

    def frame(self):
        """The records as a pandas DataFrame (pandas imported lazily)."""
        import pandas as pd

        return pd.DataFrame(self.records)


def agrees(slope: float, lo: float, hi: float, tol: float) -> bool:
    """The pass rule of a measured slope against a predicted range [lo, hi] (lo = hi: one value):
    lo - tol <= slope <= hi + tol. NaN never agrees."""
    return bool(lo - tol <= slope <= hi + tol)


def fit_all(res: CoordResult, pred: Mapping, user_pred, tol) -> None:
    """Fit every (name, quantity, step) of `res.records` and append the rows to `res.fits`.

    pred: automatic predictions {(name, quantity, step): (lo, hi)}; user_pred: the user's, which win
    (see `coord_check`'s `predicted`); tol: float, or dict quantity / prefix -> tolerance.
    """
    wi = {w: i for i, w in enumerate(res.widths)}
    si = {s: i for i, s in enumerate(res.seeds)}
    table: dict[tuple, np.ndarray] = {}  # (name, quantity, step) -> (n_widths, n_seeds), as `values` gives it
    for r in res.records:
        k = (r["name"], r["quantity"], r["step"])
        if k not in table:
            table[k] = np.full((len(res.widths), len(res.seeds)), np.nan)
        table[k][wi[r["width"]], si[r["seed"]]] = r["value"]
    for (name, q, step), vals in table.items():
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
                row["agrees"] = agrees(s, lo, p, tl)
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
