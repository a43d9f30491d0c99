"""What every benchmark records next to its numbers, and how it writes them."""

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def machine() -> dict:
    """torch version, cores, platform and the load average (other jobs skew timings: look at it)."""
    return dict(torch=torch.__version__, cpu_count=os.cpu_count(), platform=platform.platform(),
                load_avg=os.getloadavg() if hasattr(os, "getloadavg") else None)


def write_json(path, out: dict) -> None:
    """Write the result (plus `machine()`) as JSON and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**out, **machine()}, indent=2) + "\n")
    print(f"wrote {path}")


def timed(fn, repeats: int):
    """Best-of-`repeats` seconds of fn() and its last output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def timed_pair(fa, fb, repeats: int):
    """Best-of-`repeats` seconds of fa and fb, measured alternately (a load spike hits both alike), and
    their last outputs: ([best_a, best_b], [out_a, out_b])."""
    best, outs = [float("inf"), float("inf")], [None, None]
    for _ in range(repeats):
        for i, f in enumerate((fa, fb)):
            t0 = time.perf_counter()
            outs[i] = f()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, outs


def timed_rounds(fns, repeats: int):
    """Seconds of every call of each fn in `fns`, run in rounds (f0 f1 f2, f0 f1 f2, ...: a load spike
    hits all alike), and their last outputs: ([[s, ...] per fn], [out per fn])."""
    times, outs = [[] for _ in fns], [None] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = f()
            times[i].append(time.perf_counter() - t0)
    return times, outs


def ratio_stats(num: list, den: list) -> dict:
    """The ratio num / den per round (same round, same load), as median, min and max over rounds."""
    r = sorted(a / b for a, b in zip(num, den))
    return dict(median=round(statistics.median(r), 3), min=round(r[0], 3), max=round(r[-1], 3))


def fmt_ratio(s: dict) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"
