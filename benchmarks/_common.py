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


def clock_for(threads: int):
    """(name, clock): the process's CPU time for one-thread runs (time spent waiting for a core while
    other jobs run is not counted, so a shared machine skews it far less than wall time), wall time
    otherwise (CPU time would sum the threads)."""
    return ("cpu", time.process_time) if threads == 1 else ("wall", time.perf_counter)


def timed_rounds(fns, repeats: int, clock=time.perf_counter):
    """Seconds of every call of each fn in `fns`, run in rounds (each fn once per round: a load spike
    hits all alike; the order rotates from round to round, so no fn always runs first), and their
    last outputs: ([[s, ...] per fn], [out per fn])."""
    times, outs = [[] for _ in fns], [None] * len(fns)
    n = len(fns)
    for r in range(repeats):
        for i in [(r + j) % n for j in range(n)]:
            f = fns[i]
            t0 = clock()
            outs[i] = f()
            times[i].append(clock() - t0)
    return times, outs


def ratio_stats(num: list, den: list) -> dict:
    """The ratio num / den per round (same round, same load), as median, min and max over rounds."""
    r = sorted(a / b for a, b in zip(num, den))
    return dict(median=round(statistics.median(r), 3), min=round(r[0], 3), max=round(r[-1], 3))


def fmt_ratio(s: dict) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"
