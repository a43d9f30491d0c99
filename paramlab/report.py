"""Plots and tables comparing schemes across width (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .measure.fit import fit_slope

# One colour per preset so every figure paramlab draws reads the same way.
COLORS = {"sp": "#d62728", "sp-stable": "#ff7f0e", "ntk": "#1f77b4", "mf": "#2ca02c", "mup": "#9467bd",
          "init features": "#7f7f7f"}
# mf and muP coincide (one symmetry class): draw mf dashed on top so both stay visible.
LINESTYLES = {"mf": "--"}


def save_figure(fig, path) -> Path:
    """tight_layout, write `path` (folders made) at 120 dpi, close the figure; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_vs_width(
    series: Mapping[str, tuple[Sequence[float], Sequence]],
    path: str | Path,
    ylabel: str,
    title: str = "",
    ax=None,
    logy: bool = True,
    hlines: Mapping[str, float] | None = None,
) -> Path | None:
    """Plot a quantity against width (log2 x), one line per label with its fitted slope.

    series: label -> (widths, values) where values is (n_widths,) or (n_widths, n_seeds); the band
    is the min-max over seeds. logy=True: log-log, geometric mean, slope of log2 value per doubling
    of width (the width exponent). logy=False: linear y, mean, slope = change per doubling.
    hlines: label -> value drawn as horizontal dashed lines (e.g. kernel baselines).
    """
    plt = _plt()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, (widths, values) in series.items():
        v = np.asarray(values, dtype=float).reshape(len(widths), -1)
        ok = np.all(np.isfinite(v) & ((v > 0) if logy else True), axis=1)
        if not ok.any():
            continue
        w, v = np.asarray(widths, dtype=float)[ok], v[ok]
        if logy:
            gm = np.exp(np.log(v).mean(axis=1))
            slope = fit_slope(w, v)[0] if len(w) >= 2 else float("nan")
        else:
            gm = v.mean(axis=1)
            slope = float(np.polyfit(np.log2(w), gm, 1)[0]) if len(w) >= 2 else float("nan")
        c = COLORS.get(label)
        unit = "slope" if logy else "per 2x width"
        ax.plot(w, gm, marker="o", ls=LINESTYLES.get(label, "-"), color=c, label=f"{label} ({unit} {slope:+.2f})")
        if v.shape[1] > 1:
            ax.fill_between(w, v.min(axis=1), v.max(axis=1), color=c, alpha=0.15, lw=0)
    for i, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls=":", lw=1.5, color=f"C{7 + i}", label=f"{label} ({y:.3g})")
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log", base=2)
    ax.set_xlabel("width")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path) if own else None


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table; floats printed with 3 significant digits."""
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
