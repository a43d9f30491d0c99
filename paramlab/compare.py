"""Redraw and compare runs from the local store (or wandb offline run folders) without a server.

For every numeric summary metric: the metric against width, one line per scheme (and per any other
config key that varies, except the seed), the seeds as a band, the fitted slope in the legend.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from .measure.fit import slope_per_doubling
from .report import SLOPE_WORDS, markdown_table, plot_vs_width
from .records import RecordWarning, find_wandb_offline_runs, load_runs

_IGNORE = {"seed", "width", "experiment", "kind", "group"}


def _warn(what: str, paths: list) -> None:
    if paths:
        warnings.warn(f"compare: {len(paths)} {what}: " + ", ".join(str(p) for p in paths), RecordWarning,
                      stacklevel=3)


def _records(paths: Iterable[str | Path]):
    """Local-store records for the given paths; a folder holding wandb offline folders and no store runs
    (``<run>/wandb/``, an ``offline-run-*`` folder) maps to the runs they belong to (`_runs_at`).

    Every run left out is named in a RecordWarning: an unreadable config.json or summary.json
    (truncated, garbage, a JSON list), a run without a 'width', a duplicate of another run's config
    (the same grid point stored twice would count twice; the first by path is kept), a run that did
    not finish (running, failed), a wandb run folder that belongs to no paramlab run.
    """
    recs, seen, by_config = [], set(), {}
    unreadable, no_width, unfinished, dupes, orphans = [], [], [], [], []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: give a run, group or experiment folder of the store")
        for r in _runs_at(p, orphans):
            if r.path in seen:
                continue
            seen.add(r.path)
            if any("config.json" in q or "summary.json" in q for q in r.problems):
                unreadable.append(r.path)
                continue
            if "width" not in r.config:
                no_width.append(r.path)
                continue
            if r.status not in ("finished", "diverged"):
                unfinished.append(f"{r.path} ({r.status})")
                continue
            key = json.dumps(r.config, sort_keys=True)
            if key in by_config:
                dupes.append(f"{r.path} (same config as {by_config[key]})")
                continue
            by_config[key] = r.path
            recs.append(r)
    _warn("runs left out, their config.json or summary.json unreadable", unreadable)
    _warn("runs left out, no 'width' in their config", no_width)
    _warn("runs left out, not finished (no result)", unfinished)
    _warn("duplicated runs left out (counted once)", dupes)
    _warn("wandb runs left out, not inside a paramlab run folder (no config.json beside their wandb/ folder)",
          orphans)
    return recs


def _runs_at(p: Path, orphans: list) -> list:
    """The store's runs under `p`; where it holds none, the runs its wandb offline folders belong to.

    Decided by what the folder holds, not by its name: a group under ``my_wandb_study/`` is a group.
    A wandb folder that belongs to no paramlab run is added to `orphans` (and warned)."""
    runs = load_runs(p)
    if runs or p.is_file():
        return runs
    found = find_wandb_offline_runs(p)
    orphans.extend(w.path for w in found if w.paramlab_run is None)
    owners = list(dict.fromkeys(Path(w.paramlab_run) for w in found if w.paramlab_run is not None))
    return load_runs(owners) if owners else []


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
    unknown = sorted(set(metrics or ()) - keys)
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}: the runs' numeric summary metrics are "
                         + ", ".join(sorted(keys)))
    metrics = sorted(metrics or keys)
    out = Path(out) if out else Path(list(paths)[0]) / "compare"
    out.mkdir(parents=True, exist_ok=True)
    slopes: dict[str, dict[str, float]] = {}
    fits: dict[str, str] = {}  # metric -> which slope its row holds (SLOPE_WORDS: the plot's legend says the same)
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
        plot_vs_width(series, path, m, f"{m} vs width ({', '.join(sorted(series))})", logy=positive)
        slopes[m], fits[m] = {}, SLOPE_WORDS[positive]
        for label, (w, v) in series.items():
            mean = np.nanmean(np.log2(v) if positive else v, axis=1)
            ok = np.isfinite(mean)
            slopes[m][label] = slope_per_doubling(np.array(w)[ok], mean[ok])
    labels = sorted(groups)
    rows = [[m, fits[m]] + [slopes[m].get(lb, float("nan")) for lb in labels] for m in slopes]
    table = markdown_table(["metric", "fit"] + labels, rows, float_fmt="+.3f")
    print(table)
    print(f"fit: '{SLOPE_WORDS[True]}' = slope of log2(metric) against log2(width) (metric ~ width^slope; all values "
          f"> 0); '{SLOPE_WORDS[False]}' = slope of the metric itself against log2(width)")
    print(f"plots: {out}")
    return {"slopes": slopes, "table": table, "out": str(out), "n_runs": len(recs)}
