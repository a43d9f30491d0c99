"""Log-log slope fits (how a quantity scales with width) and 95% intervals over seeds."""

from __future__ import annotations

import numpy as np


def fit_slope(widths, values) -> tuple[float, float]:
    """Least-squares slope and intercept of log2(values) against log2(widths).

    `values` is (n_widths,) or (n_widths, n_seeds); seeds are averaged in log space (geometric
    mean), which is what a power law n^p predicts and is robust to one noisy seed.
    Returns (slope, intercept). Raises ValueError for non-positive values or fewer than 2 widths.
    """
    w = np.asarray(widths, dtype=float)
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if len(w) < 2 or v.shape[0] != len(w):
        raise ValueError(f"need >= 2 widths and one row of values per width, got {len(w)} widths, values {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError("fit_slope needs finite positive values (log scale)")
    y = np.log2(v).mean(axis=1)
    slope, intercept = np.polyfit(np.log2(w), y, 1)
    return float(slope), float(intercept)


def slope_per_doubling(widths, values) -> float:
    """Least-squares slope of `values` (one per width, on the scale they are given: a gain, an
    accuracy, a log2 learning rate, a log2 size) against log2(width): the change per doubling of
    width. nan with fewer than 2 widths."""
    w = np.asarray(widths, dtype=float)
    if len(w) < 2:
        return float("nan")
    return float(np.polyfit(np.log2(w), np.asarray(values, dtype=float), 1)[0])


def slope_where_positive(widths, values) -> float:
    """`fit_slope`'s slope over the widths whose values (all seeds) are finite and positive; nan when
    fewer than 2 widths qualify (e.g. runs that diverged, or a quantity that is exactly 0)."""
    v = np.asarray(values, dtype=float).reshape(len(widths), -1)
    ok = np.all(np.isfinite(v) & (v > 0), axis=1)
    return fit_slope(np.asarray(widths)[ok], v[ok])[0] if ok.sum() >= 2 else float("nan")


# two-sided 95% Student t quantiles; beyond 10 degrees of freedom the Cornish-Fisher expansion
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    if df in _T95:
        return _T95[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_widths, n_seeds) -> mean and 95% t half-width over seeds, per width (nan with one seed)."""
    a = np.asarray(a, dtype=float)
    n = np.sum(np.isfinite(a), axis=1)
    m = np.nanmean(a, axis=1)
    sd = np.array([np.nanstd(r, ddof=1) if k > 1 else np.nan for r, k in zip(a, n)])
    return m, np.array([t95(int(k) - 1) for k in n]) * sd / np.sqrt(np.maximum(n, 1))
