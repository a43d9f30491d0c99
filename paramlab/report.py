"""Plots and tables: comparing schemes across width, coordinate checks, scheme tables (matplotlib,
headless; nothing here measures or trains).

    markdown_table, text_table     every table paramlab prints
    schemes_table                  the scheme presets with their invariants
    slope_table, plot_coord        a coordinate check's fits and its mup-style plot
    plot_depth_coord               a depth coordinate check, one panel per quantity, one line per rule
    plot_vs_width                  any quantity against width, one line per scheme, fitted slopes and the
                                   predicted ones as guide lines
    plot_lr_sweep                  loss vs log2 lr per width with each width's robust optimum (`lr_sweep`)
    pyplot, save_figure            matplotlib (Agg backend for files); write a figure and close it
    color, width_colors            the one palette: a colour per scheme and depth rule, a colour map for widths
    log_ticks, legend_outside      readable log axes; a legend that does not cover the data
    describe_size                  "schemes ...; widths a-b; n seeds" for a figure's title

Every figure names its scheme(s), its size and its metric in its title (the experiments pass them).

Slopes: the words are fixed here (`SLOPE_WORDS`): on a log y-axis the fit is log2(y) against
log2(width), a *width exponent* (y ~ width^p); on a linear y-axis it is y against log2(width), a
*change per 2x width*. Every table and legend says which one it prints.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .measure.coord_result import ACT_QUANTITIES, wanted_quantities
from .measure.fit import fit_slope, slope_per_doubling
from .schemes import PRESETS, get_scheme

__all__ = ["COLORS", "LINESTYLES", "SLOPE_WORDS", "color", "describe_size", "legend_outside", "log_ticks",
           "markdown_table", "plot_coord", "plot_depth_coord", "plot_lr_sweep", "plot_vs_width", "pyplot",
           "save_figure", "schemes_table", "slope_table", "text_table", "width_colors"]

# The one palette: a colour per preset and per depth rule, so every figure paramlab draws reads the same way.
COLORS = {"sp": "#d62728", "sp-stable": "#ff7f0e", "ntk": "#1f77b4", "mf": "#2ca02c", "mup": "#9467bd",
          "none": "#d62728", "depth-mup": "#1f77b4", "completep": "#9467bd",
          "init features": "#7f7f7f", "nngp kernel": "#8c564b", "ntk kernel": "#17becf"}
# mf and muP coincide (one symmetry class): draw mf dashed on top so both stay visible.
LINESTYLES = {"mf": "--"}
WIDTH_CMAP = "viridis"  # lines of one scheme at several widths (or depths): dark = narrow, yellow = wide
# what a fitted slope is called, by y-axis: log-log (exponent) or linear (change per doubling of width)
SLOPE_WORDS = {True: "width exponent", False: "change per 2x width"}


def color(label: str) -> str | None:
    """The palette colour of a scheme / depth rule / baseline label (its first word counts: 'mup w=64'),
    lazy-rich-<alpha> in between ntk and mup; None for anything else (matplotlib's cycle)."""
    key = str(label).lower()
    if key in COLORS:
        return COLORS[key]
    first = re.split(r"[\s,(:]", key, maxsplit=1)[0]
    if first in COLORS:
        return COLORS[first]
    if first.startswith("lazy-rich"):
        return "#8c564b"
    return None


def width_colors(n: int) -> list:
    """n colours of the width colour map, narrow to wide."""
    import matplotlib

    cmap = matplotlib.colormaps[WIDTH_CMAP]
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


def describe_size(params: Mapping) -> str:
    """'schemes a, b; widths 64-1024; 3 seeds' from an experiment's resolved options (what it has of them)."""
    parts = []
    if params.get("schemes"):
        parts.append("schemes " + ", ".join(map(str, params["schemes"])))
    ws = params.get("widths")
    if ws:
        parts.append(f"widths {min(ws)}-{max(ws)}" if len(ws) > 1 else f"width {ws[0]}")
    if isinstance(params.get("seeds"), int):
        parts.append(f"{params['seeds']} seed" + ("s" if params["seeds"] != 1 else ""))
    if params.get("steps"):
        parts.append(f"{params['steps']} steps")
    return "; ".join(parts)


def _tick_label(v: float, _pos=None) -> str:
    return f"{v:g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def log_ticks(ax, axis: str = "y", values: Sequence[float] | None = None) -> None:
    """Readable ticks on a log axis: `values` (e.g. the widths) if given, else 1-2-5 (or, over a narrow
    range, 1..9) x 10^k inside the axis limits, labelled as plain numbers; at least two labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    a = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    if not (lo > 0 and hi > lo):
        return
    if values is not None:
        ticks = sorted({float(v) for v in values if lo <= v <= hi})
    else:
        ticks = []
        for subs in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
            ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                     for m in subs if lo <= m * 10.0 ** e <= hi]
            if len(ticks) >= 3:
                break
        if len(ticks) < 3:  # a narrow range (less than a factor ~2): evenly spaced round numbers
            from matplotlib.ticker import MaxNLocator

            ticks = [t for t in MaxNLocator(5).tick_values(lo, hi) if lo <= t <= hi]
        if len(ticks) > 9:  # a wide range: powers of 10 only
            ticks = [t for t in ticks if abs(math.log10(t) - round(math.log10(t))) < 1e-9] or ticks
    if len(ticks) < 2:  # nothing round inside: the two limits themselves
        ticks = [lo, hi]
    a.set_major_locator(FixedLocator(ticks))
    a.set_major_formatter(FuncFormatter(_tick_label))
    a.set_minor_locator(NullLocator())
    a.set_minor_formatter(NullFormatter())


def legend_outside(ax, below: bool = False, fontsize: float = 8, **kw):
    """The axis's legend outside its data: to the right (default), or below (`below`, for a row of panels)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if below:  # as many columns as fit under the panel: long labels (with their slopes) one per line
        longest = max(len(str(lb)) for lb in labels)
        ncol = kw.pop("ncol", 1 if longest > 30 else 2 if longest > 16 else 3)
        leg = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.24), fontsize=fontsize,
                        frameon=False, ncol=min(ncol, len(labels)), **kw)
    else:
        leg = ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=fontsize,
                        frameon=False, borderaxespad=0, **kw)
    leg.set_in_layout(False)  # the panels keep their size; save_figure's tight bounding box takes the legend in
    return leg


def save_figure(fig, path) -> Path:
    """tight_layout, write `path` (folders made) at 120 dpi with every legend inside the image, close the
    figure; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tight_layout's "not compatible" with outside legends
        fig.tight_layout()
    # the tight box: every axis, plus the legends kept out of the layout and the figure's own texts (suptitle)
    extra = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends) + list(fig.texts)
    if getattr(fig, "_suptitle", None) is not None:
        extra.append(fig._suptitle)
    fig.savefig(path, dpi=120, bbox_inches="tight", bbox_extra_artists=extra)
    pyplot().close(fig)
    return path


def _inline(backend: str | None) -> bool:
    return bool(backend) and any(k in backend.lower() for k in ("inline", "ipympl", "widget", "nbagg"))


def pyplot(headless: bool = True):
    """matplotlib.pyplot, switched to the Agg backend when `headless` (files, no window), except inside a
    notebook whose inline backend is set (figures then show inline as well as being written)."""
    import os

    import matplotlib

    current = matplotlib.rcParams._get_backend_or_none() or os.environ.get("MPLBACKEND")
    if headless and not _inline(current):
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
    guides: Mapping[str, float] | None = None,
    legend: str = "right",
) -> Path | None:
    """Plot a quantity against width (log2 x), one line per label with its fitted slope.

    series: label -> (widths, values) where values is (n_widths,) or (n_widths, n_seeds); the band
    is the min-max over seeds. logy=True: log-log, geometric mean, slope of log2 value per doubling
    of width (the width exponent). logy=False: linear y, mean, slope = change per doubling.
    hlines: label -> value drawn as horizontal dotted lines (e.g. kernel baselines).
    guides: label -> predicted width exponent (logy) or change per 2x width, drawn as a thin dashed
        line in the label's colour through its first point ("predicted").
    legend: 'right' (outside the data), 'below' (for a row of panels) or 'none'.
    """
    plt = pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
    all_w = set()
    for label, (widths, values) in series.items():
        v = np.asarray(values, dtype=float).reshape(len(widths), -1)
        ok = np.all(np.isfinite(v) & ((v > 0) if logy else True), axis=1)
        if not ok.any():
            continue
        w, v = np.asarray(widths, dtype=float)[ok], v[ok]
        all_w |= set(w.tolist())
        if logy:
            gm = np.exp(np.log(v).mean(axis=1))
            slope = fit_slope(w, v)[0] if len(w) >= 2 else float("nan")
        else:
            gm = v.mean(axis=1)
            slope = slope_per_doubling(w, gm)
        c = color(label)
        line = ax.plot(w, gm, marker="o", ls=LINESTYLES.get(label, "-"), color=c,
                       label=f"{label} ({SLOPE_WORDS[logy]} {slope:+.2f})")[0]
        if v.shape[1] > 1:
            ax.fill_between(w, v.min(axis=1), v.max(axis=1), color=line.get_color(), alpha=0.15, lw=0)
        if guides and label in guides and guides[label] is not None and math.isfinite(guides[label]):
            p = float(guides[label])
            ref = gm[0] * (w / w[0]) ** p if logy else gm[0] + p * np.log2(w / w[0])
            ax.plot(w, ref, ls=(0, (4, 3)), lw=1, color=line.get_color(), alpha=0.7,
                    label=f"{label} predicted ({p:+.2g})")
    for label, y in (hlines or {}).items():
        ax.axhline(y, ls=":", lw=1.5, color=color(label) or "0.4", label=f"{label} ({y:.3g})")
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log", base=2)
    ax.set_xlabel("width")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="major")
    if all_w:
        log_ticks(ax, "x", sorted(all_w))
    if logy:
        log_ticks(ax, "y")
    if legend != "none":
        legend_outside(ax, below=legend == "below")
    return save_figure(fig, path) if own else None


def plot_lr_sweep(res, path=None):
    """`lr_sweep`'s figure: the seed-mean loss against log2 lr, one line per width (narrow dark, wide
    yellow), each width's robust optimum as a dotted vertical line with its +-se band, diverged lrs
    as crosses on the top edge. Saves to `path` if given (and returns it); else returns the Figure."""
    plt = pyplot(headless=path is not None)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    x = np.asarray(res.log2_lrs, dtype=float)
    cols = width_colors(len(res.widths))
    finite = res.losses[np.isfinite(res.losses)]
    top = float(finite.max()) if finite.size else 1.0
    for i, (w, o, c) in enumerate(zip(res.widths, res.optima, cols)):
        mean = res.losses[i].mean(axis=0)
        shown = np.where(np.isfinite(mean), mean, np.nan)
        label = f"width {w}: optimum {o.x:+.2f}" + (f" ± {o.se:.2f}" if np.isfinite(o.se) else "") + (
            f" ({o.status})" if o.status != "ok" else "")
        ax.plot(x, shown, "o-", ms=3, color=c, label=label)
        if res.losses.shape[1] > 1:
            with np.errstate(invalid="ignore"):
                lo, hi = np.nanmin(np.where(np.isfinite(res.losses[i]), res.losses[i], np.nan), axis=0), \
                    np.nanmax(np.where(np.isfinite(res.losses[i]), res.losses[i], np.nan), axis=0)
            ax.fill_between(x, lo, hi, color=c, alpha=0.12, lw=0)
        if np.isfinite(o.x):
            ax.axvline(o.x, color=c, ls=":", lw=1)
            if np.isfinite(o.se):
                ax.axvspan(o.x - o.se, o.x + o.se, color=c, alpha=0.08, lw=0)
        bad = ~np.isfinite(mean)
        if bad.any():
            ax.plot(x[bad], np.full(bad.sum(), top), "x", color=c, ms=7, clip_on=False)
    ax.set_yscale("log")
    ax.set_xlabel("log2 learning rate (x marks: diverged, counted as +inf)")
    ax.set_ylabel("loss returned by train_eval (seed mean)")
    shift = (f"shift {res.shift:+.2f} ± {res.shift_se:.2f} log2 steps" if np.isfinite(res.shift)
             else "shift: optimum not located")
    scheme = f"{res.scheme}; " if res.scheme else ""
    ax.set_title(f"lr sweep ({scheme}widths {res.widths[0]}-{res.widths[-1]}, {len(res.seeds)} seeds): {shift}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    log_ticks(ax, "y")
    legend_outside(ax)
    if path is not None:
        return save_figure(fig, path)
    return fig


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


def _kind(name: str) -> str:
    """A module's kind: its name with layer indices starred ('blocks.3.attn.q' -> 'blocks.*.attn.q')."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)", "*", name)


def plot_coord(result, path=None, quantity: str = "act/l1", names: Iterable[str] | None = None,
               steps: Iterable[int] | None = None, title: str | None = None):
    """mup-style coordinate-check plot: one panel per step, width on a log2 x-axis, one line per name
    (mean over seeds, log y-axis). Saves to ``path`` if given; returns the matplotlib Figure.

    title: what the figure shows, e.g. 'muP, 3-layer tanh MLP' (the quantity, widths, seeds and optimizer
    family are added). With more than 12 names, lines are coloured by module kind (layer index starred:
    one legend entry per kind, deeper layers drawn lighter), so no colour repeats."""
    plt = pyplot(headless=path is not None)
    if names is None:
        names = result.order if quantity in ACT_QUANTITIES else result.params
    names = list(names)
    all_steps = sorted({r["step"] for r in result.records if r["quantity"] == quantity})
    steps = [s for s in all_steps if steps is None or s in set(steps)]
    if not steps:
        raise ValueError(f"no records of {quantity!r} in this result")
    fig, axes = plt.subplots(1, len(steps), figsize=(3.0 * len(steps) + 0.6, 3.5), sharey=True, squeeze=False)
    by_kind = len(names) > 12
    keys = list(dict.fromkeys(_kind(n) for n in names)) if by_kind else names
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    styles = ["-", "--", ":", "-."]  # 20 colours x 4 line styles before anything repeats
    seen_in_kind: dict[str, int] = {}
    for ax, t in zip(axes[0], steps):
        seen_in_kind.clear()
        for i, n in enumerate(names):
            v = result.values(n, quantity, t)
            if np.all(np.isnan(v)):
                continue
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a width whose values are all 0 (zero init): NaN
                m = np.exp(np.nanmean(np.log(np.where(v > 0, v, np.nan)), axis=1))
            k = keys.index(_kind(n)) if by_kind else i
            j = seen_in_kind.get(_kind(n), 0)
            seen_in_kind[_kind(n)] = j + 1
            label = _kind(n) if by_kind else n
            ax.plot(result.widths, m, marker="o", ms=3, color=cmap(k % cmap.N), ls=styles[(k // cmap.N) % 4],
                    alpha=1.0 / (1 + 0.35 * j) if by_kind else 1.0, label=label if not (by_kind and j) else None)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"t = {t}", fontsize=9)
        ax.set_xlabel("width")
        ax.grid(alpha=0.3)
        log_ticks(ax, "x", result.widths)
    log_ticks(axes[0][0], "y")
    axes[0][0].set_ylabel(quantity)
    what = f"{title}: " if title else ""
    fig.suptitle(f"coordinate check, {what}{quantity} vs width (widths {result.widths[0]}-{result.widths[-1]}, "
                 f"{len(result.seeds)} seeds, {result.family})", fontsize=10)
    legend_outside(axes[0][-1], fontsize=7, ncol=1 + len(keys) // 24)
    if path is not None:
        save_figure(fig, path)
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
            ax.plot(res.depths, np.exp(np.log(res.values[q]).mean(1)), "o-", color=color(res.rule),
                    label=f"{res.rule} {row['slope']:+.2f}{pred}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(q)
        ax.set_xlabel("depth L (residual blocks)")
        ax.grid(alpha=0.3)
        log_ticks(ax, "x", results[0].depths)
        log_ticks(ax, "y")
        legend_outside(ax, below=True, fontsize=7)
    fig.suptitle(f"{title} (legend: slope / predicted)")
    return save_figure(fig, path)
