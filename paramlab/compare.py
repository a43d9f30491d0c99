"""Redraw and compare runs from the local store (or wandb offline run folders) without a server.

For every numeric summary metric: the metric against width, one line per scheme (and per any other
config key that varies, except the seed), the seeds as a band, the fitted slope in the legend.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from .report import markdown_table, plot_vs_width
from .records import find_wandb_offline_runs, load_runs

_IGNORE = {"seed", "width", "experiment", "kind", "group"}


def _records(paths: Iterable[str | Path]):
    """Local-store records for the given paths; wandb offline folders map to the run they belong to."""
    recs, seen = [], set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        wb = [w for w in find_wandb_offline_runs(p) if w.paramlab_run is not None] if "wandb" in str(p) else []
        for r in load_runs([Path(w.paramlab_run) for w in wb] if wb else p):
            if r.path not in seen and r.config.get("kind") != "summary" and "width" in r.config:
                seen.add(r.path)
                recs.append(r)
    return recs


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def compare(paths: Iterable[str | Path], out: str | Path | None = None, metrics: Iterable[str] | None = None) -> dict:
    """Plot each summary metric against width per scheme; returns {metric: {label: slope}} and writes PNGs."""
    recs = _records(paths)
    if not recs:
        raise ValueError("no runs with a 'width' in their config found under the given paths")
    varying = {k for k in {k for r in recs for k in r.config} - _IGNORE
               if len({repr(r.config.get(k)) for r in recs}) > 1 and k != "scheme"}
    groups: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    keys = set()
    for r in recs:
        label = str(r.config.get("scheme", "?")) + "".join(f" {k}={r.config.get(k)}" for k in sorted(varying))
        groups[label][int(r.config["width"])].append(r.summary)
        keys |= {k for k, v in r.summary.items() if _num(v) is not None and k not in ("diverged",)}
    metrics = sorted(metrics or keys)
    out = Path(out) if out else Path(list(paths)[0]) / "compare"
    out.mkdir(parents=True, exist_ok=True)
    slopes: dict[str, dict[str, float]] = {}
    for m in metrics:
        series = {}
        for label, by_w in sorted(groups.items()):
            widths = sorted(by_w)
            n = max(len(by_w[w]) for w in widths)
            vals = np.full((len(widths), n), np.nan)
            for i, w in enumerate(widths):
                for j, s in enumerate(by_w[w]):
                    v = _num(s.get(m))
                    vals[i, j] = v if v is not None and math.isfinite(v) else np.nan
            if np.isfinite(vals).any():
                series[label] = (widths, vals)
        if not series:
            continue
        positive = all(np.nanmin(v) > 0 for _, v in series.values())
        path = out / f"{m.replace('/', '_')}.png"
        plot_vs_width(series, path, m, f"{m} vs width", logy=positive)
        slopes[m] = {}
        for label, (w, v) in series.items():
            mean = np.nanmean(np.log2(v) if positive else v, axis=1)
            ok = np.isfinite(mean)
            slopes[m][label] = float(np.polyfit(np.log2(np.array(w)[ok]), mean[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
    labels = sorted(groups)
    rows = [[m] + [slopes[m].get(lb, float("nan")) for lb in labels] for m in slopes]
    table = markdown_table(["metric (slope vs log2 width)"] + labels, rows)
    print(table)
    print(f"plots: {out}")
    return {"slopes": slopes, "table": table, "out": str(out), "n_runs": len(recs)}
