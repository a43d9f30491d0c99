"""Log-log slope fits: how a quantity scales with width."""

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
