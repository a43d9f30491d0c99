"""Plots and tables: comparing schemes across width, coordinate checks, scheme tables (matplotlib,
headless; nothing here measures or trains).

    markdown_table, text_table     every table paramlab prints
    schemes_table                  the scheme presets with their invariants
    slope_table, plot_coord        a coordinate check's fits and its mup-style plot
    plot_depth_coord               a depth coordinate check, one panel per quantity, one line per rule
    plot_vs_width                  any quantity against width, one line per scheme, fitted slopes
    pyplot, save_figure            matplotlib with the Agg backend; write a figure and close it
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .measure.coord_result import ACT_QUANTITIES, wanted_quantities
from .measure.fit import fit_slope, slope_per_doubling
from .schemes import PRESETS, get_scheme

__all__ = ["COLORS", "LINESTYLES", "markdown_table", "plot_coord", "plot_depth_coord", "plot_vs_width", "pyplot", "save_figure",
           "schemes_table", "slope_table", "text_table"]

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
    pyplot().close(fig)
    return path


def pyplot(headless: bool = True):
    """matplotlib.pyplot, switched to the Agg backend when `headless` (files, no display)."""
    import matplotlib

    if headless:
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
    plt = pyplot()
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
            slope = slope_per_doubling(w, gm)
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


def _cell(v, float_fmt: str) -> str:
    if v is None:  # no value in this cell (e.g. no prediction for this row)
        return ""
    return format(v, float_fmt) if isinstance(v, float) else str(v)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence], float_fmt: str = ".3g") -> str:
    """A markdown table; floats printed with `float_fmt` (3 significant digits by default)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v, float_fmt) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(columns: Sequence[str], rows: Sequence[Sequence], float_fmt: str = ".3g") -> str:
    """A plain-text table, columns padded to their widest cell, a dashed rule under the header."""
    cells = [[_cell(v, float_fmt) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(columns)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(columns), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


def schemes_table(names: Iterable[str] | None = None) -> str:
    """Markdown table of schemes with their exponents and invariants ([input, hidden, output, vector])."""
    cols = ("input", "hidden", "output", "vector")
    fmt = lambda vals: ", ".join(f"{v:g}" for v in vals)  # noqa: E731
    rows = []
    for s in (get_scheme(n) for n in (names or PRESETS)):
        inv = s.invariants()
        rows.append([s.name, fmt(s[r].a for r in cols), fmt(s[r].b for r in cols), fmt(s[r].c_sgd for r in cols),
                     fmt(s[r].c_adam for r in cols), fmt(inv[r]["std"] for r in cols), fmt(inv[r]["sgd"] for r in cols),
                     fmt(inv[r]["adam"] for r in cols), f"{s.predicted_r():g}"])
    return markdown_table(["scheme", "a", "b", "c (SGD)", "c (Adam)", "eff. init std", "eff. SGD lr", "eff. Adam lr",
                           "r (SGD)"], rows)


# -- coordinate checks (paramlab.measure.coord) ----------------------------------------------------------


def _fmt_pred(f: dict) -> str:
    p, lo = f["predicted"], f.get("predicted_lo")
    if p is None:
        return "-"
    if lo is None or abs(lo - p) < 1e-9:
        return f"{p:+.3f}"
    return f"{p:+.3f} [{lo:+.3f}, {p:+.3f}]"


def slope_table(result, quantities: Iterable[str] | None = None, steps: Iterable[int] | None = None,
                fmt: str = "markdown") -> str:
    """The fits as a markdown (or plain text, fmt='text') table: name, quantity, step, slope, predicted,
    tol, verdict."""
    qs = set(wanted_quantities(quantities)) if quantities is not None else None
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
    if fmt not in ("markdown", "text"):
        raise ValueError(f"fmt must be 'markdown' or 'text', got {fmt!r}")
    return markdown_table(head, rows) if fmt == "markdown" else text_table(head, rows)


def plot_coord(result, path=None, quantity: str = "act/l1", names: Iterable[str] | None = None,
               steps: Iterable[int] | None = None):
    """mup-style coordinate-check plot: one panel per step, width on a log2 x-axis, one line per name
    (mean over seeds, log y-axis). Saves to ``path`` if given; returns the matplotlib Figure."""
    plt = pyplot(headless=path is not None)
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


def plot_depth_coord(results: Sequence, path, quantities=("rel", "dstream", "branch0", "dbranch", "dW"),
                     title: str = "depth coordinate check"):
    """`measure.depth_coord.DepthCoordResult`s drawn: one panel per quantity, one line per rule (legend:
    measured slope / predicted range); returns the path."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(quantities), figsize=(3.4 * len(quantities), 3.3))
    for ax, q in zip(np.atleast_1d(axes), quantities):
        for res in results:
            row = next(r for r in res.rows if r["quantity"] == q)
            pred = "" if row["lo"] is None else (f" / {row['lo']:+.2g}" if row["lo"] == row["hi"] else
                                                  f" / [{row['lo']:+.2g}, {row['hi']:+.2g}]")
            ax.plot(res.depths, np.exp(np.log(res.values[q]).mean(1)), "o-", label=f"{res.rule} {row['slope']:+.2f}{pred}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(q)
        ax.set_xlabel("depth L (residual blocks)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} (legend: slope / predicted)")
    return save_figure(fig, path)
