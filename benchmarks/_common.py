"""What every benchmark records next to its numbers, and how it writes them."""

import json
import os
import platform
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
