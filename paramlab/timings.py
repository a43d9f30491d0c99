"""How long each experiment takes at each size: one home, `experiment_times.json` next to this file.

`paramlab run -h` and `paramlab run NAME --help` print these; docs/experiments.md quotes them;
``python benchmarks/time_experiments.py`` runs experiments and rewrites their entries with measured
wall-clock and CPU seconds (`record`). An entry is either such a measurement,
``{"wall_s": ..., "cpu_s": ..., "measured": "<UTC date>", "threads": n, "note": ...}``, or a line of
text carried over from earlier docs (a size target, or one measurement on a busy machine).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TIMES_PATH", "describe", "load_times", "record"]

TIMES_PATH = Path(__file__).with_name("experiment_times.json")


def load_times(path: Path = TIMES_PATH) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fmt_seconds(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec} s" if m < 60 else f"{m // 60} h {m % 60} min"


def describe(name: str, size: str, times: dict | None = None) -> str:
    """'3 min 12 s (measured 2026-12-07, CPU 5 min 40 s)', the stored text, or '?' when nothing is known."""
    entry = (load_times() if times is None else times).get(name, {}).get(size)
    if isinstance(entry, dict) and "wall_s" in entry:
        cpu = f", CPU {_fmt_seconds(entry['cpu_s'])}" if entry.get("cpu_s") is not None else ""
        return f"{_fmt_seconds(entry['wall_s'])} (measured {entry.get('measured', '?')}{cpu})"
    return str(entry) if entry else "?"


def record(name: str, size: str, wall_s: float, cpu_s: float, *, measured: str, threads: int, note: str = "",
           path: Path = TIMES_PATH) -> dict:
    """Store one measurement (atomically) and return the whole table."""
    from .io import write_json_atomic

    times = load_times(path)
    times.setdefault(name, {})[size] = {"wall_s": round(float(wall_s), 1), "cpu_s": round(float(cpu_s), 1),
                                        "measured": measured, "threads": int(threads), **({"note": note} if note else {})}
    write_json_atomic(Path(path), times)
    return times
