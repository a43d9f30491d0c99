"""The robust optimum of a loss-vs-log2(lr) curve, with an uncertainty; the shift of the optimum between
two curves (e.g. two widths) with its interval.

The grid argmin is fragile: it moves in whole grid steps, one noisy point flips it, and where the loss
keeps falling up to the divergence edge it is pinned there whatever the curve's shape. Here:

    curves   (n_seeds, n_lrs) losses on the grid x = log2 lr; +inf (or nan) where a run diverged
    mean     ybar(x) = mean over seeds (inf at an lr where any seed diverged: that lr is not usable)
    i*       argmin of ybar
    window   the finite grid points within `half` steps of i*  (default half = 2: up to 5 points)
    fit      least squares  f(ybar) = A x^2 + B x + C  on the window, f = log by default (loss
             curves are closer to parabolas in log loss, and train losses span decades)
    optimum  x_hat = -B / (2A), clipped to the window      if A > 0 and the window has a point on
                                                           each side of i*
    status   "ok"   a vertex inside the window;
             "edge" i* is the first/last usable grid point (no point on one side: the optimum is at or
                    beyond the grid or divergence edge; x_hat = x[i*] and is only a bound);
             "flat" A <= 0 (no curvature: the data do not locate an optimum); x_hat = x[i*]
    error    (a) bootstrap over seeds: resample the seed rows with replacement, redo everything,
                 std of x_hat over the resamples ("ok" ones); nan with one seed;
             (b) the fit's own standard error by the delta method on (A, B) with the residual
                 variance of the window fit (needs >= 4 points); used where (a) is nan.

Known property (tests/test_optimum.py): on curves 5x steeper towards the divergence edge than towards
small lr, as measured LM curves are, the symmetric parabola's vertex sits 0.5-0.7 grid steps on the
shallow side of the true minimum; the bias cancels in shifts (<= 0.2 steps). So quote absolute optima
as "the fitted parabola's vertex" and compare widths by `shift`.

`shift(...)` compares the optima of two curves with the errors added in quadrature. `align_shift(...)`
is the whole-curve alternative: the horizontal shift s (and a vertical offset c) minimizing the mean
squared difference between f(curve)(x) and f(ref)(x - s) + c over the lrs where both are finite
(linear interpolation of the reference), by a grid search with 0.01-step resolution and a parabolic
refinement.

The method is calibrated on synthetic curves and on the MLP / LM lr-transfer grids (see the README's
LR-transfer section).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Optimum", "align_shift", "robust_optimum", "shift"]


@dataclass(frozen=True)
class Optimum:
    x: float  # log2 lr of the optimum (a bound when status == "edge")
    status: str  # "ok", "edge", "flat", "none" (no usable point)
    argmin: float  # the plain grid argmin of the seed-mean curve
    se_boot: float  # bootstrap-over-seeds std of x (nan: one seed or too few ok resamples)
    se_fit: float  # delta-method std of the vertex from the window fit (nan if < 4 points or not ok)
    window: tuple  # the grid points used by the fit
    coef: tuple  # (A, B, C) of f(ybar) = A x^2 + B x + C, or ()

    @property
    def se(self) -> float:
        """The reported uncertainty: the bootstrap std where there is one, else the fit's."""
        return self.se_boot if np.isfinite(self.se_boot) else self.se_fit


def _clean(curves) -> np.ndarray:
    c = np.atleast_2d(np.asarray(curves, dtype=float))
    return np.where(np.isfinite(c), c, np.inf)


def _fit_once(x: np.ndarray, curves: np.ndarray, half: int, transform) -> tuple:
    """(x_hat, status, argmin, window, coef, se_fit) for one set of seed rows."""
    ybar = curves.mean(axis=0)  # inf where any seed diverged
    ok = np.isfinite(ybar) & (ybar > 0 if transform is np.log else True)
    if not ok.any():
        return np.nan, "none", np.nan, (), (), np.nan
    i = int(np.argmin(np.where(ok, ybar, np.inf)))
    idx = [j for j in range(max(0, i - half), min(len(x), i + half + 1)) if ok[j]]
    left, right = [j for j in idx if j < i], [j for j in idx if j > i]
    if not left or not right:
        return float(x[i]), "edge", float(x[i]), tuple(x[idx]), (), np.nan
    xs, ys = x[idx], transform(ybar[idx])
    coef = np.polyfit(xs, ys, 2)
    a, b, _ = coef
    if a <= 0:
        return float(x[i]), "flat", float(x[i]), tuple(xs), tuple(coef), np.nan
    v = -b / (2 * a)
    se = np.nan
    if len(xs) >= 4:  # delta method: Var(v) = g^T Cov(a, b) g, g = (b / (2a^2), -1 / (2a))
        design = np.stack([xs ** 2, xs, np.ones_like(xs)], axis=1)
        resid = ys - design @ coef
        s2 = float(resid @ resid) / (len(xs) - 3)
        cov = s2 * np.linalg.inv(design.T @ design)
        g = np.array([b / (2 * a * a), -1 / (2 * a)])
        se = float(np.sqrt(max(0.0, g @ cov[:2, :2] @ g)))
    v = float(np.clip(v, xs.min(), xs.max()))  # a vertex outside its own window is not trusted beyond it
    return v, "ok", float(x[i]), tuple(xs), tuple(coef), se


def robust_optimum(log2_lrs, curves, half: int = 2, log: bool = True, n_boot: int = 1000, seed: int = 0) -> Optimum:
    """The optimum of `curves` (n_seeds, n_lrs) over the grid `log2_lrs` (see the module docstring)."""
    x = np.asarray(log2_lrs, dtype=float)
    c = _clean(curves)
    if c.shape[1] != len(x):
        raise ValueError(f"curves have {c.shape[1]} lrs, the grid has {len(x)}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("log2_lrs must be increasing")
    transform = np.log if log else (lambda v: v)
    v, status, am, window, coef, se_fit = _fit_once(x, c, half, transform)
    se_boot = np.nan
    n = c.shape[0]
    if n > 1 and status == "ok":
        rng = np.random.default_rng(seed)
        vals = []
        for _ in range(n_boot):
            vb, sb, *_ = _fit_once(x, c[rng.integers(0, n, n)], half, transform)
            if sb == "ok":
                vals.append(vb)
        if len(vals) >= n_boot // 2:  # most resamples locate an optimum
            se_boot = float(np.std(vals))
    return Optimum(v, status, am, se_boot, se_fit, window, coef)


def shift(log2_lrs, ref_curves, curves, **kw) -> tuple[float, float, str]:
    """(x_hat(curves) - x_hat(ref), its std (errors in quadrature), status): 'ok' only if both are ok."""
    a, b = robust_optimum(log2_lrs, ref_curves, **kw), robust_optimum(log2_lrs, curves, **kw)
    status = "ok" if a.status == b.status == "ok" else f"{a.status}/{b.status}"
    return b.x - a.x, float(np.hypot(a.se, b.se)), status


def align_shift(log2_lrs, ref_curve, curve, log: bool = True, max_shift: float = 6.0, offset: bool = True,
                min_overlap: int = 4) -> float:
    """Horizontal shift s (grid steps; negative = towards smaller lr) that best maps the seed-mean
    `ref_curve` onto `curve`: argmin_s min_c mean_x (f(curve)(x) - f(ref)(x - s) - c)^2 over the lrs
    where both are finite, c = 0 if not `offset`. nan if fewer than `min_overlap` lrs overlap."""
    x = np.asarray(log2_lrs, dtype=float)
    f = np.log if log else (lambda v: v)
    r = _clean(ref_curve).mean(axis=0)
    y = _clean(curve).mean(axis=0)
    rf, yf = np.isfinite(r), np.isfinite(y)
    if rf.sum() < 2:
        return np.nan
    xr, fr = x[rf], f(r[rf])

    def cost(s):
        xs = x - s  # where the reference is read
        use = yf & (xs >= xr.min()) & (xs <= xr.max())
        if use.sum() < min_overlap:
            return np.inf
        d = f(y[use]) - np.interp(xs[use], xr, fr)
        if offset:
            d = d - d.mean()
        return float(np.mean(d * d))

    grid = np.arange(-max_shift, max_shift + 1e-9, 0.01)
    costs = np.array([cost(s) for s in grid])
    if not np.isfinite(costs).any():
        return np.nan
    j = int(np.argmin(costs))
    if 0 < j < len(grid) - 1 and np.all(np.isfinite(costs[j - 1:j + 2])):
        c0, c1, c2 = costs[j - 1:j + 2]
        den = c0 - 2 * c1 + c2
        if den > 0:
            return float(grid[j] + 0.01 * 0.5 * (c0 - c2) / den)
    return float(grid[j])
